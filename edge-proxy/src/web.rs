//! `--static DIR`: serves a built web app (the demo's) from the proxy itself, so the page and
//! `/mux` share an origin and the default Origin check just works.

use std::path::Path;

use tower_http::services::{ServeDir, ServeFile};

/// A service for `dir`: files as they are, `index.html` for any other path (client-side
/// routes).
pub fn app(dir: &Path) -> ServeDir<ServeFile> {
    ServeDir::new(dir).append_index_html_on_directories(true).fallback(ServeFile::new(dir.join("index.html")))
}
