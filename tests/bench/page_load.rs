//! The page's load with 10,000 entities in headless chromium (issue #7, `live.rs` calls it with
//! its agent): time to the first drawn tree, by the page's own clock (`performance.now()`, from
//! the start of navigation), and how long expanding the next 200 children takes (the click
//! handler's synchronous work, median of five), which shows the tree is drawn lazily.

use std::time::Duration;

use serde_json::Value;

use super::browser::Browser;
use super::{row, Row};

const WAIT: Duration = Duration::from_secs(60);

pub async fn run(base: &str) -> Vec<Row> {
    let browser = Browser::launch().await;
    browser.open(&format!("{base}/")).await;
    let first = browser
        .wait_for(
            "the tree's first drawing",
            WAIT,
            "document.querySelectorAll('#tree [role=treeitem]').length > 1 && performance.now()",
        )
        .await;
    let drawn = browser
        .evaluate("document.querySelectorAll('#tree [role=treeitem]').length")
        .await;
    // Five expansions in a row (200 children each); the median.
    let mut expand = Vec::new();
    for _ in 0..5 {
        let took = browser
            .evaluate(
                "(() => { const t = performance.now(); document.querySelector('#tree .more .label').click(); return performance.now() - t; })()",
            )
            .await;
        expand.push(took.as_f64().unwrap_or(f64::NAN));
    }
    let expand = Value::from(super::median(&expand));
    let errors = browser.errors();
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    vec![
        row(
            "page: first render of the tree with 10,002 entities (headless chromium, from navigation)",
            format!("{:.0} ms, {drawn} tree items drawn", ms(&first)),
            "(reported)",
            None,
        ),
        row(
            "page: \"show 200 more\" with 10,002 entities (click handler, synchronous; median of 5)",
            format!(
                "{:.1} ms, {} console errors",
                ms(&expand),
                errors.len()
            ),
            "responsive, no errors",
            Some(errors.is_empty() && ms(&expand) < 100.0),
        ),
    ]
}
