//! `snapstore list`: every complete snapshot, oldest first.

use anyhow::Result;
use snapstore::{LocalFile, Snapshot};

use super::{Output, human_bytes, table};

pub(crate) async fn run(store: &LocalFile, out: Output) -> Result<()> {
    let records = store.list().await?;
    if out.json {
        return out.json(&records);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let c = &r.config;
            vec![
                c.id.clone(),
                c.name.clone(),
                if c.cpu > 0 {
                    c.cpu.to_string()
                } else {
                    "-".into()
                },
                match u64::try_from(c.memory) {
                    Ok(bytes) if bytes > 0 => human_bytes(bytes),
                    _ => "-".into(),
                },
                human_bytes(r.size_bytes),
                c.description.clone(),
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "CPU",
        "MEMORY",
        "SIZE",
        "DESCRIPTION",
        "CREATED",
    ];
    out.line(table(&header, &rows))
}
