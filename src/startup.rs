//! What the gateway starts from: the settings of the environment (with an
//! optional `.env`), the key kept in a file when none is configured on the
//! embedded store, and the routes file. The files are read here, once, so
//! that `config` stays plain data and parsing.
//!
//! Imports: `config`, `routes` (the routes file's reader), `secret_file`.

use crate::config::{self, Config, ConfigError};
use crate::routes::{self, RouteConfig};

/// The settings and what the files they name hold.
#[derive(Debug)]
pub struct Startup {
    pub config: Config,
    /// `ROUTES_FILE`'s routes, longest prefix first (none without it).
    pub routes: Vec<RouteConfig>,
}

/// Loads `.env` (when present), reads the process environment, the
/// generated key file (made when missing) and the routes file.
pub fn load() -> Result<Startup, ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(err) if err.not_found() => {}
        Err(err) => return Err(ConfigError::DotEnv(err)),
    }
    let env = |name: &str| std::env::var(name).ok();
    let config = match config::generated_key_file(&env) {
        Some(key_file) => {
            let key = crate::secret_file::load_or_create(&key_file)
                .map_err(|err| ConfigError::KeyFile(Box::new(err)))?;
            let mut config = Config::from_lookup(&|name| match name {
                "SECRET_KEY" => Some(key.clone()),
                other => env(other),
            })?;
            config.notices.push(format!(
                "SECRET_KEY is not set: using the key kept in {} (set SECRET_KEY to share tokens with other services)",
                key_file.display()
            ));
            config
        }
        None => Config::from_lookup(&env)?,
    };
    let routes = match &config.edge.routes_file {
        Some(path) => routes::load(path)?,
        None => Vec::new(),
    };
    Ok(Startup { config, routes })
}
