//! What the binary's test files share.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Waits until `child` writes its ready file and returns what it says; a
/// child that does not within `timeout` is killed and the test fails.
pub fn wait_ready(mut child: Child, ready: &Path, timeout: Duration) -> (Child, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return (child, v);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcpgate never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
