pub mod policy;
pub mod request;
pub mod cache;
pub mod audit;
pub mod routing;
pub mod gateway;
pub mod metrics;
