//! Splits server-sent-event bytes into the data of whole events as they complete.

/// The bytes of an event not yet complete, kept until its end arrives.
#[derive(Default)]
pub struct Events {
    partial: Vec<u8>,
}

impl Events {
    /// Calls `each` with the data (data lines joined) of every event `chunk` completes;
    /// events without data (comments) are skipped.
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let owned;
        let mut bytes: &[u8] = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(chunk);
            owned = std::mem::take(&mut self.partial);
            &owned
        };
        let normalised;
        if memchr::memchr(b'\r', bytes).is_some() {
            normalised = normalise(bytes);
            bytes = &normalised;
        }
        let Some(end) = memchr::memmem::rfind(bytes, b"\n\n") else {
            self.partial = bytes.to_vec();
            return Ok(());
        };
        let rest = bytes[end + 2..].to_vec();
        for event in memchr::memmem::find_iter(&bytes[..end + 2], b"\n\n").scan(0, |start, stop| {
            let event = &bytes[*start..stop];
            *start = stop + 2;
            Some(event)
        }) {
            if let Some(data) = data_of(event) {
                each(&data)?;
            }
        }
        self.partial = rest;
        Ok(())
    }
}

/// CRLF line ends as LF; a lone CR at the very end stays for the next chunk's LF.
fn normalise(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn data_of(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut lines = event
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data:"))
        .map(|value| value.strip_prefix(b" ").unwrap_or(value));
    let first = lines.next()?;
    match lines.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = [first, b"\n", second].concat();
            for more in lines {
                joined.push(b'\n');
                joined.extend_from_slice(more);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// An error event's `error` object, in either protocol: its message and type.
#[derive(serde::Deserialize)]
pub(super) struct ErrorDetail<'a> {
    #[serde(borrow)]
    pub message: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
}
