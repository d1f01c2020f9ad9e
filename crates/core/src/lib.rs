//! bluegreen's core: the deploy config and the typed plan computed from it.
//!
//! This crate does no I/O beyond reading the config file. It knows nothing of SSH, templates or the
//! command line: backends (`bluegreen-ssh` runs a plan, `bluegreen-render` turns it into a bash
//! script or a Jenkinsfile) take a [`Plan`] and decide how to carry it out.
//!
//! ```
//! let yaml = r#"
//! app: shop
//! artifact: build/libs/*.jar
//! proxy: { host: 10.0.0.5, upstream_file: /etc/nginx/shop-upstream.conf }
//! servers: [ { host: 10.0.0.11 }, { host: 10.0.0.12 } ]
//! deploy_dir: /srv/shop
//! "#;
//! let config = bluegreen_core::Config::parse(yaml, "bluegreen.yaml").unwrap();
//! let plan = bluegreen_core::Plan::new(&config);
//! assert_eq!(plan.servers.len(), 2);
//! assert_eq!(plan.phases[0].kind.name(), "prepare");
//! ```

pub mod config;
pub mod error;
pub mod plan;
pub mod redact;
pub mod remote;
pub mod word;
pub mod wording;

pub use config::Config;
pub use error::Error;
pub use plan::{Phase, PhaseKind, Plan, Step};
pub use redact::redact_url;
pub use remote::{RemoteCall, RemoteFn};
pub use word::{RuntimeVar, Var, Word};
