//! The layers, tested around small routers with `oneshot`.

mod static_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::*;

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use std::sync::Arc;

    use axum::Router;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::Response;
    use secrecy::SecretString;

    fn gateway(keys: &str) -> Gateway {
        let keys: Vec<SecretString> = keys
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_owned()))
            .collect();
        let routes = Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/id",
                get(
                    |axum::Extension(id): axum::Extension<RequestId>| async move {
                        id.as_str().to_owned()
                    },
                ),
            )
            .route("/boom", get(boom))
            .route(
                "/who",
                get(|axum::Extension(c): axum::Extension<Caller>| async move {
                    c.principal.tenant.as_deref().unwrap_or_default().to_owned()
                }),
            );
        crate::layers::gateway(
            routes,
            Arc::new(StaticKeys::new(&keys)),
            AdminAccess::default(),
        )
    }

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    fn get_with(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Body::empty()).unwrap()
    }

    async fn text(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_request_keeps_the_clients_id_and_handlers_see_the_same_one() {
        let res = gateway("")
            .oneshot(get_with("/id", &[("x-request-id", "trace-42")]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-request-id"], "trace-42");
        assert_eq!(text(res).await, "trace-42");
    }

    #[tokio::test]
    async fn an_unusable_client_id_is_replaced_by_a_fresh_one() {
        let long = "x".repeat(129);
        for bad in ["has space", long.as_str()] {
            let res = gateway("")
                .oneshot(get_with("/id", &[("x-request-id", bad)]))
                .await
                .unwrap();
            let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert!(header.starts_with("req_"), "{header}");
            assert_eq!(text(res).await, header);
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_with_an_id_and_the_gateway_carries_on() {
        let gw = gateway("");
        let res = gw.clone().oneshot(get_with("/boom", &[])).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().contains_key("x-request-id"));
        let body = text(res).await;
        assert!(body.contains("internal error in weir"), "{body}");
        let res = gw.oneshot(get_with("/ok", &[])).await.unwrap();
        assert_eq!(text(res).await, "fine");
    }

    #[tokio::test]
    async fn gateway_keys_are_required_except_on_health_probes() {
        let gw = gateway("gw-key");
        let refused = gw.clone().oneshot(get_with("/ok", &[])).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key("x-request-id"));
        assert!(text(refused).await.contains("missing gateway API key"));
        let wrong = gw
            .clone()
            .oneshot(get_with("/ok", &[("authorization", "Bearer nope")]))
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let body = text(wrong).await;
        assert!(
            body.contains("invalid gateway API key") && !body.contains("nope"),
            "{body}"
        );
        for auth in [("authorization", "Bearer gw-key"), ("x-api-key", "gw-key")] {
            let res = gw.clone().oneshot(get_with("/ok", &[auth])).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{auth:?}");
        }
        // No route named /health here: it is let through to the router's 404, not refused.
        let probe = gw.oneshot(get_with("/health", &[])).await.unwrap();
        assert_eq!(probe.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn fresh_ids_are_req_and_24_hex_digits_and_differ() {
        let (a, b) = (
            crate::layers::request_id::fresh_id(),
            crate::layers::request_id::fresh_id(),
        );
        for id in [&a, &b] {
            let hex = id.strip_prefix("req_").unwrap_or_default();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
        }
        assert_ne!(a, b);
    }
}

/// Keys decided later, as a store would: the layer waits for the decision.
mod pending_tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::http::request::Parts;
    use axum::routing::get;
    use futures::FutureExt;
    use tower::ServiceExt;

    use super::super::*;

    struct Slow;

    impl Authenticator for Slow {
        fn authenticate(&self, request: &Parts) -> AuthDecision {
            let key = auth::presented_key(request).map(str::to_owned);
            AuthDecision::Pending(
                async move {
                    tokio::task::yield_now().await;
                    match key.as_deref() {
                        Some("good") => Ok(Caller {
                            principal: weir::Principal {
                                user: Some("alice".into()),
                                ..weir::Principal::default()
                            },
                            may_name_user: false,
                        }),
                        _ => Err(auth::Refusal::unauthorized("unknown key")),
                    }
                }
                .boxed(),
            )
        }
    }

    #[tokio::test]
    async fn an_authenticator_that_decides_later_admits_and_refuses() {
        let routes = Router::new().route(
            "/who",
            get(|axum::Extension(c): axum::Extension<Caller>| async move {
                c.principal.user.as_deref().unwrap_or_default().to_owned()
            }),
        );
        let gw = crate::layers::gateway(routes, Arc::new(Slow), AdminAccess::default());
        let req = |key: &str| {
            Request::get("/who")
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap()
        };
        let ok = gw.clone().oneshot(req("good")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"alice");
        let refused = gw.oneshot(req("bad")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key("x-request-id"));
    }
}

/// The access log's line for a request whose client went away before the answer.
mod cancelled_tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::super::*;

    /// Keeps the fields of every event, as `name=value;` text.
    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    struct Text<'a>(&'a mut String);

    impl tracing::field::Visit for Text<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?};", field.name()));
        }
    }

    impl tracing::Subscriber for Lines {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = String::new();
            event.record(&mut Text(&mut line));
            self.0.lock().unwrap().push(line);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_request_dropped_before_its_answer_is_logged_as_cancelled() {
        let lines = Arc::new(Lines::default());
        let _guard = tracing::subscriber::set_default(lines.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let routes = Router::new().route("/slow", get(futures::future::pending::<String>));
            let gw = crate::layers::gateway(
                routes,
                Arc::new(StaticKeys::new(&[])),
                AdminAccess::default(),
            );
            let req = Request::get("/slow")
                .header("x-request-id", "gone-early")
                .body(Body::empty())
                .unwrap();
            let answered = tokio::time::timeout(Duration::from_millis(20), gw.oneshot(req)).await;
            assert!(answered.is_err(), "the route never answers");
        });
        let lines = lines.0.lock().unwrap().clone();
        let line = lines
            .iter()
            .find(|l| l.contains("outcome=\"cancelled\""))
            .unwrap_or_else(|| panic!("no cancelled line in {lines:?}"));
        assert!(line.contains("request_id=gone-early"), "{line}");
        assert!(line.contains("status=499"), "{line}");
        assert!(line.contains("route=/slow"), "{line}");
    }
}
