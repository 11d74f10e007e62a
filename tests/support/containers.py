"""Podman on this machine, for the image and cluster tests.

No image registry is reachable here, so base images are made from Debian packages
(`debootstrap --variant=minbase bookworm`, then `podman import`) and cached: the root
filesystem's tar under ~/.cache/gatewayd-images and the image in podman's store, both named
by a hash of the recipe, so a machine pays for them once. This machine's quirks (runc,
cgroupfs, no default ulimits, host networking, the egress proxy's CA for downloads during a
build, the host's Rust toolchain mounted into the build stage) live here and nowhere else:
the Containerfile and deploy/compose.yaml are written for an ordinary podman or docker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from support import gateway

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("GATEWAYD_IMAGE_CACHE") or Path.home() / ".cache" / "gatewayd-images")
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PYTHON_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BUILD_PACKAGES = ("gcc", "libc6-dev")  # the linker rustc calls
SERVICE_PACKAGES = ("redis-server", "nginx-light")  # the cluster's Redis and load balancer
# Docs, man pages, translations and the downloaded .debs: 60 MB nobody in a container reads.
STRIP = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
GATEWAY_IMAGE = "localhost/gatewayd:test"

PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager=cgroupfs")
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"


def environment() -> dict[str, str]:
    """This process's environment plus the CONTAINERS_CONF podman needs here."""
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Runs podman with this machine's flags; returns stdout, raises with stderr quoted."""
    done = subprocess.run([*PODMAN, *args], capture_output=True, timeout=timeout, env=environment())
    if check and done.returncode != 0:
        out = (done.stdout + done.stderr).decode()
        raise RuntimeError(f"podman {' '.join(args)} exited {done.returncode}:\n{out[-3000:]}")
    return done.stdout.decode()


def image_exists(name: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", name], env=environment()).returncode == 0


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One builder per machine at a time (other test runs may share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tag(name: str, recipe: str) -> str:
    return f"localhost/gatewayd-base/{name}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def python_base() -> str:
    """Debian bookworm minbase with Python and its venv module, imported as an image."""
    recipe = f"debootstrap --variant=minbase --include={','.join(PYTHON_PACKAGES)} {SUITE} {MIRROR}; rm {STRIP}"
    tag = _tag("python", recipe)
    with _locked():
        if image_exists(tag):
            return tag
        archive = CACHE / f"{tag.rsplit(':', 1)[1]}-rootfs.tar"
        if not archive.exists():
            _debootstrap(archive)
        with open(archive, "rb") as tar:
            subprocess.run(
                [*PODMAN, "import", "-q", "-", tag],
                stdin=tar,
                check=True,
                env=environment(),
                capture_output=True,
                timeout=300,
            )
    return tag


def _debootstrap(archive: Path) -> None:
    # eatmydata: dpkg's fsync per file makes debootstrap 4x slower, for a throwaway tree.
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        root = Path(work) / "rootfs"
        argv = ["eatmydata", "debootstrap", "--variant=minbase", f"--include={','.join(PYTHON_PACKAGES)}"]
        done = subprocess.run([*argv, SUITE, str(root), MIRROR], capture_output=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{done.stdout.decode()[-3000:]}")
        for path in STRIP:
            for child in (root / path).glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        partial = archive.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=300)
        partial.rename(archive)


def derived_base(name: str, packages: Sequence[str]) -> str:
    """The Python base plus Debian packages (apt inside a build; cached by podman)."""
    base = python_base()
    containerfile = (
        f"FROM {base}\n"
        "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends "
        f"-o Dpkg::Options::=--force-unsafe-io {' '.join(packages)} >/dev/null "
        "&& rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb\n"
    )
    tag = _tag(name, containerfile)
    with _locked():
        if not image_exists(tag):
            recipe = CACHE / f"{name}.Containerfile"
            recipe.write_text(containerfile)
            podman("build", "-q", "--network", "host", "-t", tag, "-f", str(recipe), str(CACHE), timeout=600)
    return tag


def _build_mounts() -> list[str]:
    """The host's Rust toolchain (Debian's rustc is too old for pyo3), and the CA bundle and
    pip config that let downloads through this machine's egress proxy."""
    home = Path.home()
    rustup = Path(os.environ.get("RUSTUP_HOME") or home / ".rustup")
    cargo_bin = Path(os.environ.get("CARGO_HOME") or home / ".cargo") / "bin"
    mounts = [
        (rustup, "/root/.rustup"),
        (cargo_bin, "/root/.cargo/bin"),
        (Path("/etc/ssl/certs/ca-certificates.crt"), "/etc/ssl/certs/ca-certificates.crt"),
        (Path("/etc/pip.conf"), "/etc/pip.conf"),
    ]
    return [f"--volume={host}:{inside}:ro" for host, inside in mounts if host.exists()]


def gateway_image() -> str:
    """Builds the repo's Containerfile on the local bases (layers and the cargo target dir
    are cached by podman, so an unchanged tree builds in seconds)."""
    runtime, build = python_base(), derived_base("build", BUILD_PACKAGES)
    with _locked():
        podman(
            "build",
            "--format",
            "docker",
            "--network",
            "host",
            "--build-arg",
            f"BASE={runtime}",
            "--build-arg",
            f"BUILD_BASE={build}",
            *_build_mounts(),
            "-t",
            GATEWAY_IMAGE,
            str(REPO),
            timeout=1200,
        )
    return GATEWAY_IMAGE


def services_image() -> str:
    """Redis and nginx from Debian, standing in for the official images compose.yaml names."""
    return derived_base("services", SERVICE_PACKAGES)


def record(**figures) -> None:
    """Measured figures for the closing note, in tests/artifacts/containers.json."""
    path = REPO / "tests" / "artifacts" / "containers.json"
    path.parent.mkdir(exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **figures}, indent=2) + "\n")


def wait_ready(name: str, url: str, timeout: float = 60) -> None:
    """Until `url` answers 200; on timeout the error quotes the container's log."""
    try:
        gateway.wait_ready(url, timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; podman logs {name}:\n{podman('logs', name, check=False)[-3000:]}") from None


def remove_containers(*names: str) -> None:
    if names:
        podman("rm", "-f", "-v", "-t", "0", *names, check=False)


def remove_volumes(*names: str) -> None:
    if names:
        podman("volume", "rm", "-f", *names, check=False)
