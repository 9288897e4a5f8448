//! The floor for the HTTP load benchmark: the same tokio/axum/hyper stack and connection loop as presenced,
//! serving the same routes with fixed answers and no work (no token check, no store, no presence logic).
//! Whatever presenced costs beyond this server is the cost of presenced itself.
//!
//! `floor --listen 127.0.0.1:9090` (see `bench/http-load.sh`).

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

const ODATA_JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false";

fn presence(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","availability":"Offline","activity":"Offline","statusMessage":null,"outOfOfficeSettings":{{"message":null,"isOutOfOffice":false}},"sequenceNumber":"00000000000000000000","workLocation":{{"workLocationType":"unspecified","source":"none","placeId":null}}}}"#
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9090".to_owned();
    while let Some(arg) = args.next() {
        if arg == "--listen" {
            listen = args.next().expect("--listen ADDRESS");
        }
    }
    let one = format!(
        r#"{{"@odata.context":"http://floor/v1.0/$metadata#users('00000000-0000-4000-8000-000000000000')/presence/$entity",{}"#,
        &presence("00000000-0000-4000-8000-000000000000")[1..]
    );
    let many: Vec<String> = (0..650).map(|index| presence(&format!("00000000-0000-4000-8000-{index:012}"))).collect();
    let many = format!(
        r#"{{"@odata.context":"http://floor/v1.0/$metadata#Collection(microsoft.graph.presence)","value":[{}]}}"#,
        many.join(",")
    );
    let (one, many) = (Bytes::from(one), Bytes::from(many));
    let router = Router::new()
        .route(
            "/v1.0/users/{id}/presence",
            get(move || {
                let one = one.clone();
                async move { ([(header::CONTENT_TYPE, ODATA_JSON)], one).into_response() }
            }),
        )
        .route("/v1.0/users/{id}/presence/setPresence", post(|_body: Bytes| async { axum::http::StatusCode::OK }))
        .route(
            "/v1.0/communications/getPresencesByUserId",
            post(move |_body: Bytes| {
                let many = many.clone();
                async move { ([(header::CONTENT_TYPE, ODATA_JSON)], many).into_response() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    println!("floor listening on {}", listener.local_addr().expect("address"));
    let limits = presenced::Config::load(None, std::iter::empty(), &[]).unwrap().connection_limits();
    presence_api::serve(listener, router, limits, None, std::future::pending()).await;
}
