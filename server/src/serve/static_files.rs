//! The web app's files. `tower-http`'s `ServeDir` does the serving (ranges, types, precompressed
//! files); this guard keeps it to the folder it was given: no dotfiles (`.env`, `.git`), and no
//! symbolic link that leads out of `--web-dir`. Unknown paths get `index.html`, so the app's own
//! routes load. Without a built app, `/` says how to build one instead of a bare 404.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::services::{ServeDir, ServeFile};

use super::error::AppError;

/// The router that serves `web_dir`.
pub fn router(web_dir: &Path) -> Router {
    let root = Arc::new(web_dir.canonicalize().unwrap_or_else(|_| web_dir.to_path_buf()));
    let files = ServeDir::new(web_dir).fallback(ServeFile::new(web_dir.join("index.html")));
    Router::new().fallback_service(files).layer(middleware::from_fn_with_state(root, guard))
}

async fn guard(State(root): State<Arc<PathBuf>>, request: Request, next: Next) -> Response {
    let path = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy().into_owned();
    if path.split(['/', '\\']).any(|segment| segment.starts_with('.')) {
        return StatusCode::NOT_FOUND.into_response();
    }
    // A path that exists must resolve inside the folder; one that does not gets index.html.
    if let Ok(real) = root.join(path.trim_start_matches('/')).canonicalize()
        && !real.starts_with(&*root)
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::NOT_FOUND && (path == "/" || path == "/index.html") {
        return not_built(&root).into_response();
    }
    response
}

/// The answer where the web app should be and is not.
pub fn not_built(web_dir: &Path) -> AppError {
    AppError::not_found(
        "web_app_not_built",
        format!(
            "no browser feed in {}: build it with `bash web/tools.sh && trunk build --release` (or run \
             `bash demo.sh`), or pass --web-dir; the API is described at /openapi.json",
            web_dir.display()
        ),
    )
}
