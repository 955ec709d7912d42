//! The route table in force: every route of the routes file with the
//! balancer of its upstreams, longest prefix first.
//!
//! The table is swapped whole ([`LiveRoutes`]): a request takes the table
//! once and keeps the route it chose (an `Arc`) until it is answered, so a
//! reload changes nothing under a request in flight. A reloaded table keeps
//! the balancers (with their health and their checks) of the upstream
//! lists it already had.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use super::RouteConfig;
use crate::balance::Balancer;
use crate::edge::Canonical;

/// A route in force.
pub struct Route {
    pub config: RouteConfig,
    /// The route's upstreams; none for a route that only states a policy.
    pub balancer: Option<Arc<Balancer>>,
    /// The route's name in metrics and logs: `proxy:<prefix>`.
    pub label: String,
}

/// The routes in force, longest prefix first.
#[derive(Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

/// The routes of the two readings of a path (see [`crate::edge::path`]).
pub struct Readings<'a> {
    /// The route of the policy reading (`;` parameters removed).
    pub policy: Option<&'a Arc<Route>>,
    /// `None` when the path reads one way only (no `;` parameters); else the
    /// route of its literal reading (`;` a plain character), if any.
    pub literal: Option<Option<&'a Arc<Route>>>,
}

impl<'a> Readings<'a> {
    /// The literal reading's route when it is another route than the
    /// policy reading's: a request must pass its policy too.
    pub fn other(&self) -> Option<&'a Arc<Route>> {
        self.literal
            .flatten()
            .filter(|other| !self.policy.is_some_and(|route| Arc::ptr_eq(route, other)))
    }
}

impl RouteTable {
    /// The table of `configs` (longest prefix first, as `routes::parse`
    /// orders them). An upstream list that `previous` already balances keeps
    /// its balancer; the balancers made anew are returned too, to be probed
    /// and checked before the table takes requests.
    pub fn build(
        configs: &[RouteConfig],
        previous: &RouteTable,
        check_every: Duration,
    ) -> std::io::Result<(Self, Vec<Arc<Balancer>>)> {
        let mut known: Vec<Arc<Balancer>> = previous.balancers();
        let mut made = Vec::new();
        let mut routes = Vec::with_capacity(configs.len());
        for config in configs {
            let balancer = if config.upstreams.is_empty() {
                None
            } else if let Some(same) = known.iter().find(|b| b.upstreams() == config.upstreams) {
                Some(Arc::clone(same))
            } else {
                let balancer = Arc::new(Balancer::new(&config.upstreams, check_every).map_err(
                    |err| std::io::Error::other(format!("route {}: {err}", config.prefix)),
                )?);
                known.push(Arc::clone(&balancer));
                made.push(Arc::clone(&balancer));
                Some(balancer)
            };
            routes.push(Arc::new(Route {
                label: format!("proxy:{}", config.prefix),
                config: config.clone(),
                balancer,
            }));
        }
        Ok((Self { routes }, made))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route configurations, in table order.
    pub fn configs(&self) -> impl Iterator<Item = &RouteConfig> {
        self.routes.iter().map(|r| &r.config)
    }

    /// Every distinct balancer of the table.
    pub fn balancers(&self) -> Vec<Arc<Balancer>> {
        let mut out: Vec<Arc<Balancer>> = Vec::new();
        for balancer in self.routes.iter().filter_map(|r| r.balancer.as_ref()) {
            if !out.iter().any(|b| Arc::ptr_eq(b, balancer)) {
                out.push(Arc::clone(balancer));
            }
        }
        out
    }

    /// The route a decoded path falls under: the longest matching prefix.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.config.matches(path))
    }

    /// The routes of both readings of a canonical path.
    pub fn readings(&self, canonical: &Canonical) -> Readings<'_> {
        Readings {
            policy: self.find(&canonical.policy),
            literal: (canonical.literal != canonical.policy).then(|| self.find(&canonical.literal)),
        }
    }
}

/// The table in force, swapped whole by a reload.
#[derive(Default)]
pub struct LiveRoutes(ArcSwap<RouteTable>);

impl std::fmt::Debug for LiveRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveRoutes({} routes)", self.load().len())
    }
}

impl LiveRoutes {
    /// The table in force now (cheap: no lock, no allocation).
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.0.load()
    }

    pub fn load_full(&self) -> Arc<RouteTable> {
        self.0.load_full()
    }

    /// Puts `table` in force for every request from now on.
    pub fn replace(&self, table: Arc<RouteTable>) {
        self.0.store(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::path::canonicalize;

    fn configs(text: &str) -> Vec<RouteConfig> {
        super::super::parse(text).unwrap()
    }

    const ROUTES: &str = r#"
        [[routes]]
        prefix = "/api"
        upstreams = ["127.0.0.1:9001"]
        policy = "authenticated"

        [[routes]]
        prefix = "/api/admin"
        upstreams = ["127.0.0.1:9001"]
        policy = "role:admin"

        [[routes]]
        prefix = "/admin"
        policy = "role:admin"
        "#;

    #[test]
    fn finds_the_routes_of_both_readings() {
        let (table, made) = RouteTable::build(
            &configs(ROUTES),
            &RouteTable::default(),
            Duration::from_secs(5),
        )
        .unwrap();
        // One balancer for the one upstream list; none for a policy alone.
        assert_eq!(made.len(), 1);
        assert!(table.find("/admin/x").unwrap().balancer.is_none());
        let prefix = |r: Option<&Arc<Route>>| r.map(|r| r.config.prefix.clone());
        let plain = canonicalize(b"/api/admin/x").unwrap();
        let readings = table.readings(&plain);
        assert_eq!(prefix(readings.policy).as_deref(), Some("/api/admin"));
        assert!(readings.literal.is_none() && readings.other().is_none());
        // `/api;x/admin`: `/api/admin` read one way, `/api;x/admin` the other,
        // which no route takes.
        let split = canonicalize(b"/api;x/admin").unwrap();
        let readings = table.readings(&split);
        assert_eq!(prefix(readings.policy).as_deref(), Some("/api/admin"));
        assert!(matches!(readings.literal, Some(None)));
        // `/api/..%3B/admin`: `/admin` one way (Tomcat's `..;`), `/api/..;/admin`
        // the other.
        let two = canonicalize(b"/api/..%3B/admin").unwrap();
        let readings = table.readings(&two);
        assert_eq!(prefix(readings.policy).as_deref(), Some("/admin"));
        assert_eq!(prefix(readings.other()).as_deref(), Some("/api"));
        // Both readings under one route: nothing more to pass.
        let same = canonicalize(b"/admin;x/y").unwrap();
        let readings = table.readings(&same);
        assert_eq!(prefix(readings.policy).as_deref(), Some("/admin"));
        assert!(readings.literal.is_some() && readings.other().is_none());
    }

    #[test]
    fn a_rebuilt_table_keeps_the_balancers_it_already_had() {
        let every = Duration::from_secs(5);
        let (first, _) =
            RouteTable::build(&configs(ROUTES), &RouteTable::default(), every).unwrap();
        let changed = ROUTES.replace("\"authenticated\"", "\"public\"")
            + "[[routes]]\nprefix = \"/new\"\nupstreams = [\"127.0.0.1:9002\"]\n";
        let (second, made) = RouteTable::build(&configs(&changed), &first, every).unwrap();
        assert_eq!(made.len(), 1, "only the new upstream list gets a balancer");
        assert_eq!(made[0].upstreams(), ["127.0.0.1:9002".parse().unwrap()]);
        let kept = |table: &RouteTable| table.find("/api/x").unwrap().balancer.clone().unwrap();
        assert!(Arc::ptr_eq(&kept(&first), &kept(&second)));
        assert_eq!(
            second.find("/api/x").unwrap().config.policy,
            super::super::Policy::Public
        );
        assert_eq!(second.balancers().len(), 2);
    }

    #[test]
    fn the_live_table_is_swapped_whole() {
        let live = LiveRoutes::default();
        assert!(live.load().is_empty());
        let (table, _) = RouteTable::build(
            &configs(ROUTES),
            &RouteTable::default(),
            Duration::from_secs(5),
        )
        .unwrap();
        let before = live.load_full();
        live.replace(Arc::new(table));
        assert_eq!(live.load().len(), 3);
        assert!(
            before.is_empty(),
            "a table taken before the swap stays as it was"
        );
    }
}
