//! A lab removes every namespace (and with them every veth and attached program) and every
//! pin it made, also when the test using it panics.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use lb_tests::{lab::Lab, require_root};

fn leftovers(names: &[String], pins: &Path) -> Vec<String> {
    let mut left: Vec<String> =
        names.iter().filter(|n| Path::new("/run/netns").join(n).exists()).cloned().collect();
    if pins.exists() {
        left.push(pins.display().to_string());
    }
    left
}

/// What a lab made: its namespaces and its pin directory.
type Made = (Vec<String>, PathBuf);

#[test]
fn lab_removes_everything_it_made_even_on_panic() {
    require_root!();
    let made: Arc<Mutex<Option<Made>>> = Arc::default();
    let seen = Arc::clone(&made);
    let result = std::panic::catch_unwind(move || {
        let lab = Lab::new(2);
        assert!(lab.pin_dir().join("SERVICES").exists(), "maps are pinned while the lab runs");
        *seen.lock().expect("lock") = Some((lab.netns_names(), lab.pin_dir().to_owned()));
        panic!("a failing test");
    });
    assert!(result.is_err());
    let (names, pins) = made.lock().expect("lock").take().expect("lab was built");
    assert_eq!(names.len(), 5, "node, client, pod and two backends");
    assert_eq!(leftovers(&names, &pins), Vec::<String>::new(), "left behind after a panic");

    let lab = Lab::new(1);
    let (names, pins) = (lab.netns_names(), lab.pin_dir().to_owned());
    drop(lab);
    assert_eq!(leftovers(&names, &pins), Vec::<String>::new(), "left behind after drop");
}
