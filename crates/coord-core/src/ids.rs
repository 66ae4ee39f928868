//! Ids for new items: [`unique_id`].

/// `<prefix>_<nanos>`, bumping `nanos` until `is_taken` says the id is free.
/// Two processes that read the clock in the same nanosecond still get
/// distinct ids, because ids are made under the store's lock (or in its
/// transaction) against every id already there.
pub fn unique_id(prefix: &str, nanos: i128, is_taken: impl Fn(&str) -> bool) -> String {
    let mut n = nanos;
    loop {
        let id = format!("{prefix}_{n}");
        if !is_taken(&id) {
            return id;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_taken_ids() {
        let taken = ["work_5", "work_6"];
        assert_eq!(unique_id("work", 5, |id| taken.contains(&id)), "work_7");
        assert_eq!(unique_id("coord", 5, |id| taken.contains(&id)), "coord_5");
    }
}
