//! A minimal program doing one bare durable update per invocation: the
//! baseline for `coord claim`'s process start. Usage: `durable-once DIR`.

#[path = "../bare.rs"]
mod bare;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).expect("usage: durable-once DIR");
    let dir = std::path::Path::new(&dir);
    let lock = bare::lock_file(dir)?;
    bare::durable_update(
        dir,
        &lock,
        b"[\n  {\"work_item_id\":\"work_1\",\"status\":\"in_progress\"}\n]\n",
    )
}
