//! Operational-webhook endpoints (`/api/v1/operational-webhook/endpoint…`, as the SDKs'
//! `operational_webhook.endpoint` calls them; org tokens only): the endpoints of the
//! operational application, where Sluice tells the platform about endpoints and failing
//! deliveries (`log::operational`). They are ordinary endpoints of an internal application
//! — signed, retried, throttled and logged like any — so every route but create is the
//! endpoint route on that application; create also makes the application the first time.

use hyper::StatusCode;

use super::sources::Destination;
use super::{ApiError, ApiState, Ctx, Reply, endpoints};
use crate::log::{operational, tables};

fn not_found() -> ApiError {
    ApiError::NotFound("Endpoint not found.")
}

/// The operational application's id, once an operational endpoint was ever created.
fn app_id(state: &ApiState) -> Result<Option<String>, ApiError> {
    Ok(state.log.read(|rtxn, dbs| {
        Ok(match operational::app_key(rtxn, dbs)? {
            Some(key) => tables::app_by_key(rtxn, dbs, key)?.map(|a| a.id),
            None => None,
        })
    })?)
}

pub(super) async fn route(
    state: &ApiState,
    ctx: &Ctx,
    endpoint_ref: Option<&str>,
    what: Destination,
) -> Result<Reply, ApiError> {
    ctx.auth.require_org()?;
    let Some(app) = app_id(state)? else {
        return match what {
            Destination::Create => endpoints::create_operational(state, ctx).await,
            Destination::List => Reply::json(
                StatusCode::OK,
                &serde_json::json!({"data": [], "iterator": null, "prevIterator": null, "done": true}),
            ),
            _ => Err(not_found()),
        };
    };
    let endpoint = endpoint_ref.unwrap_or_default();
    super::sources::serve_as_endpoint(state, ctx, &app, endpoint, what).await
}
