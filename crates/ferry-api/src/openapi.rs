//! The OpenAPI 3.1 document of the API, served at `/api/v2/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` attributes and the request and response types.
//!
//! The document describes the server that serves it: when it has tokens configured, every
//! operation but `GET /api/v2/health` requires the `bearer` security scheme and declares the
//! answers of the guard ([`crate::auth`]): `401` on every protected operation, `403` on the
//! writes a `read` token may not make. A server without tokens declares no requirement (its
//! requests without a token succeed, as a fuzzer checking the document would notice).

use utoipa::OpenApi;

use crate::{changefeeds, diffs, history, repair, server, sources, tables, target};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry API",
        description = "Change data capture and replication: changefeeds, sources, server. \
                       Errors are `{\"error_code\", \"error_msg\"}` with a stable code.",
    ),
    paths(
        server::health,
        server::server_status,
        server::verify_table,
        changefeeds::create,
        changefeeds::list,
        changefeeds::get_one,
        changefeeds::update,
        changefeeds::delete,
        changefeeds::pause,
        changefeeds::resume,
        changefeeds::status,
        changefeeds::synced,
        history::history,
        repair::skip,
        repair::resync,
        tables::list,
        tables::pause,
        tables::resume,
        tables::remove,
        tables::resync_table,
        target::sync_sequences,
        target::create_foreign_keys,
        diffs::create,
        diffs::list,
        diffs::get_one,
        diffs::stop,
        diffs::resume,
        diffs::delete,
        sources::create,
        sources::list,
        sources::get_one,
        sources::update,
        sources::delete,
        sources::status,
    ),
    tags(
        (name = "changefeeds", description = "Replication jobs and their lifecycle"),
        (name = "diffs", description = "Online diffs of a changefeed's target with its source, with repair"),
        (name = "sources", description = "Named source connections"),
        (name = "server", description = "This server"),
    )
)]
struct ApiDoc;

/// The OpenAPI document; `bearer_auth`: the server checks tokens.
pub(crate) fn spec(bearer_auth: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    if bearer_auth {
        declare_bearer_auth(&mut doc);
    }
    doc
}

/// The security scheme, the global requirement, and the 401/403 answers of each operation.
fn declare_bearer_auth(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            SCHEME,
            utoipa::openapi::security::SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of the server's token file (--auth-token-file); role `read` \
                         may GET, role `admin` everything.",
                    ))
                    .build(),
            ),
        );
    doc.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (false, item.get.as_mut()),
            (false, item.head.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (true, item.patch.as_mut()),
            (true, item.delete.as_mut()),
        ];
        for (writes, operation) in operations {
            let Some(operation) = operation else { continue };
            if path == "/api/v2/health" {
                // An empty requirement: no authentication.
                operation.security = Some(vec![SecurityRequirement::default()]);
                continue;
            }
            let responses = &mut operation.responses.responses;
            responses.insert(
                "401".into(),
                error("UNAUTHORIZED: no token, or not a valid one").into(),
            );
            if writes {
                responses.insert(
                    "403".into(),
                    error("FORBIDDEN: a `read` token may not make this request").into(),
                );
            }
        }
    }
}

/// The name of the bearer security scheme in the document.
const SCHEME: &str = "bearer";
