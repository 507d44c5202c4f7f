//! The OpenAPI 3.1 document of the REST API, served at [`OPENAPI_PATH`] to anyone (no identity
//! needed: it names no user and no data), on every role.
//!
//! It is derived from the code, so it cannot drift from it: the schemas from the `app` types the
//! API sends and receives (`#[derive(ToSchema)]` under the `ssr` feature), the operations from
//! the `#[utoipa::path]` annotation on each handler, and the security section from this
//! instance's identity mode.
//!
//! **To document a route**: annotate its handler with `#[utoipa::path(...)]` (the error answers
//! are the reusable responses below: `(status = 404, response = r::NotFound)`), then add the
//! handler to `paths(...)` of [`ApiDoc`]: one line. The test `every_rest_route_is_documented`
//! fails while a route of `api::route_list` is missing here (or documented but not routed); a
//! module with routes of its own (`admin`, …) adds its `route_list` to that test.

use super::{admin, api};
use crate::config::{Auth, Settings};
use crate::identity::{LEGACY_COOKIE_NAME, PROXY_SECRET_HEADER};
use app::catalog::DatasetInfo;
use app::error::ErrorBody;
use app::jobs::ExportRequest;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{self, ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder};
use utoipa::{OpenApi, ToResponse, ToSchema};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Exportal API",
        description = "Asynchronous data exports: pick a dataset, preview it, submit an export \
            job, follow it, download its file. Every error is `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        api::datasets,
        api::preview,
        api::submit,
        api::list,
        api::get_one,
        api::cancel,
        api::retry,
        api::download,
        admin::jobs,
        admin::queue,
        admin::cancel,
        admin::redrive,
        admin::stats,
        admin::audit,
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            Unavailable
        )
    ),
    tags(
        (name = "datasets", description = "What can be exported"),
        (name = "exports", description = "Export jobs and their files"),
        (name = "admin", description = "For admins (`EXPORTAL_ADMINS`) only: anyone else gets 404")
    )
)]
pub struct ApiDoc;

/// The document for this instance: the generated one, with the identity this instance asks
/// for and, as examples of an export request, one per dataset of its catalogue.
pub fn document(settings: &Settings, datasets: &[DatasetInfo]) -> openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    add_request_examples(&mut doc, datasets);
    let components = doc.components.get_or_insert_with(Default::default);
    let mut any_of = match &settings.auth {
        Auth::Header(name) => {
            components.add_security_scheme(
                "user",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    name.as_str(),
                    "The user, named by the authenticating proxy in front of this server. \
                     Exactly one such header; a request without it is answered 401.",
                ))),
            );
            vec![SecurityRequirement::new("user", Vec::<String>::new())]
        }
        Auth::Cookie => {
            components.add_security_scheme(
                "identity_cookie",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    LEGACY_COOKIE_NAME,
                    "An anonymous identity, signed by the server (`__Host-exportal_id` over \
                     https). A request without a valid one gets a new identity in `Set-Cookie`: \
                     keep it to see your exports again.",
                ))),
            );
            // Optional: a caller without the cookie is a new anonymous user, not refused.
            vec![
                SecurityRequirement::new("identity_cookie", Vec::<String>::new()),
                SecurityRequirement::default(),
            ]
        }
    };
    if settings.edge.proxy_secret.is_some() {
        components.add_security_scheme(
            "proxy_secret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                PROXY_SECRET_HEADER,
                "The secret this server shares with its proxy; without it every request is 401.",
            ))),
        );
        any_of = any_of
            .into_iter()
            .map(|r| r.add("proxy_secret", Vec::<String>::new()))
            .collect();
    }
    doc.security = Some(any_of);
    doc
}

/// The smallest valid request for each dataset (its first format), on every operation that
/// reads an [`ExportRequest`]: names a program can only learn from this instance's catalogue.
fn add_request_examples(doc: &mut openapi::OpenApi, datasets: &[DatasetInfo]) {
    let request_ref = openapi::Ref::from_schema_name(ExportRequest::name()).ref_location;
    let examples: Vec<(String, serde_json::Value)> = datasets
        .iter()
        .filter_map(|d| {
            let format = d.formats.first()?;
            Some((
                d.id.clone(),
                serde_json::json!({"dataset": d.id, "format": format}),
            ))
        })
        .collect();
    let operations = doc
        .paths
        .paths
        .values_mut()
        .flat_map(|item| [&mut item.post, &mut item.put, &mut item.patch])
        .flatten();
    for op in operations {
        let Some(body) = op.request_body.as_mut() else {
            continue;
        };
        for content in body.content.values_mut() {
            let reads_request =
                matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == request_ref);
            if reads_request {
                content.examples = examples
                    .iter()
                    .map(|(name, value)| {
                        let example = openapi::example::ExampleBuilder::new()
                            .summary(format!("Export `{name}`"))
                            .value(Some(value.clone()))
                            .build();
                        (name.clone(), RefOr::T(example))
                    })
                    .collect();
            }
        }
    }
}

/// The route serving the document of this instance, computed once.
pub fn routes<S: Clone + Send + Sync + 'static>(
    settings: &Settings,
    datasets: &[DatasetInfo],
) -> Router<S> {
    let json = document(settings, datasets)
        .to_json()
        .expect("the OpenAPI document serialises");
    let serve = get(move || {
        let json = json.clone();
        async move { serve(json) }
    });
    // Under /api/, so a wrong method is answered in the API's error shape too.
    Router::new().route(OPENAPI_PATH, serve.fallback(api::method_not_allowed))
}

fn serve(json: String) -> Response {
    let mut res = json.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The reusable error answers: each one the `{"error": …}` body with what its status means here.
macro_rules! error_response {
    ($name:ident, $description:literal) => {
        error_response!($name, $description, |r| r);
    };
    ($name:ident, $description:literal, $extra:expr) => {
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<openapi::Response>) {
                let content = ContentBuilder::new()
                    .schema(Some(openapi::Ref::from_schema_name("ErrorBody")))
                    .build();
                let builder = ResponseBuilder::new()
                    .description($description)
                    .content("application/json", content);
                let extra: fn(ResponseBuilder) -> ResponseBuilder = $extra;
                (stringify!($name), extra(builder).build().into())
            }
        }
    };
}

error_response!(
    BadRequest,
    "The request is not valid: unreadable JSON, an unknown field, dataset, column, format or \
     option, a parameter value of the wrong type, too many rows, a bad Idempotency-Key, a path \
     that is not UTF-8 once decoded."
);
error_response!(
    Unauthorized,
    "Header mode: no user header, more than one, or an invalid one; any mode: the request did \
     not come through the proxy (its secret header or address)."
);
error_response!(
    NotFound,
    "No export with this id belongs to the caller (another user's export is not found either), \
     or its file has expired or is missing."
);
error_response!(
    Conflict,
    "The export is not in a state that allows this (e.g. cancel a finished export, retry one that \
     did not fail, download one that has not succeeded), or it changed at the same moment."
);
error_response!(
    PayloadTooLarge,
    "The request body is larger than this server accepts."
);
error_response!(
    UnsupportedMediaType,
    "The body was not sent as `Content-Type: application/json`."
);
error_response!(
    TooManyRequests,
    "Too many previews and exports in a short time (with `Retry-After`), or too many exports \
     in progress at once (without it: wait for one to finish or cancel one).",
    |r| r.header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(
                openapi::ObjectBuilder::new()
                    .schema_type(openapi::schema::Type::Integer)
                    .minimum(Some(1))
            )
            .description(Some("Whole seconds to wait before trying again."))
            .build(),
    )
);
error_response!(
    Unavailable,
    "A store, the queue or the database is unavailable or busy right now; try again in a moment."
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn documented(doc: &openapi::OpenApi) -> BTreeSet<(String, String)> {
        doc.paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                methods
                    .into_iter()
                    .filter(|(_, present)| *present)
                    .map(move |(m, _)| (m.to_string(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn every_rest_route_is_documented() {
        let routed: BTreeSet<(String, String)> = super::super::route_list()
            .into_iter()
            .map(|(method, path)| (method.to_string(), path.to_string()))
            .collect();
        assert_eq!(routed, documented(&ApiDoc::openapi()));
    }

    #[test]
    fn the_security_section_follows_the_identity_mode() {
        let header = Settings::from_args(["--auth", "header"].map(String::from)).unwrap();
        let doc = serde_json::to_value(document(&header, &[])).unwrap();
        assert_eq!(doc["security"], serde_json::json!([{"user": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["user"]["name"],
            "x-forwarded-user"
        );

        let cookie = Settings::from_args(Vec::<String>::new()).unwrap();
        let doc = serde_json::to_value(document(&cookie, &[])).unwrap();
        assert_eq!(
            doc["security"],
            serde_json::json!([{"identity_cookie": []}, {}]),
            "anonymous callers are served, so the cookie is optional"
        );
    }
}
