//! One Redis server's connection for a feature (shared rate limits, the
//! session deny-list): opened on first use inside the serving runtime, with
//! short timeouts; the connection manager reconnects by itself afterwards.
//!
//! Imports: nothing of the crate.

use std::time::Duration;

/// Longest wait for Redis on the request path before the feature falls back.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

pub struct LazyRedis {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
}

impl std::fmt::Debug for LazyRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRedis").finish_non_exhaustive()
    }
}

impl LazyRedis {
    pub fn open(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    pub async fn connection(&self) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection =
            redis::aio::ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}
