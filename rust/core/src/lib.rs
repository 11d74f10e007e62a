pub mod audit;
pub mod cache;
pub mod gateway;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod routing;
#[cfg(test)]
mod testing;
pub mod translate;
