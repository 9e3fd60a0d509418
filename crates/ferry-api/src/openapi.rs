//! The OpenAPI 3.1 document of the API, served at `/api/v2/openapi.json`, generated from the
//! handlers' `#[utoipa::path]` attributes and the request and response types.

use utoipa::OpenApi;

use crate::{changefeeds, server, sources};

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
        sources::create,
        sources::list,
        sources::get_one,
        sources::update,
        sources::delete,
        sources::status,
    ),
    tags(
        (name = "changefeeds", description = "Replication jobs and their lifecycle"),
        (name = "sources", description = "Named source connections"),
        (name = "server", description = "This server"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub(crate) fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
