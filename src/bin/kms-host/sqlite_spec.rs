//! `--store sqlite:FILE[?sync=full|normal]`.

use std::path::PathBuf;

use kms_activation::host::store::{SqliteOptions, SqliteSync};

/// Parses what follows `sqlite:`: a file, then optionally `?sync=full` or
/// `?sync=normal`. A `?` whose tail holds no `=` is part of the file name.
pub(crate) fn parse(spec: &str) -> Result<(PathBuf, SqliteSync), String> {
    let (path, options) = match spec.rsplit_once('?') {
        Some((path, options)) if options.contains('=') => (path, Some(options)),
        _ => (spec, None),
    };
    if path.is_empty() {
        return Err("sqlite: needs a file, as in sqlite:/var/lib/kms/host.db".into());
    }
    let mut sync = SqliteSync::default();
    for option in options.into_iter().flat_map(|options| options.split('&')) {
        match option.split_once('=') {
            Some(("sync", "full")) => sync = SqliteSync::Full,
            Some(("sync", "normal")) => sync = SqliteSync::Normal,
            Some(("sync", other)) => {
                return Err(format!(
                    "sqlite: sync={other:?}: expected sync=full or sync=normal"
                ));
            }
            _ => {
                return Err(format!(
                    "sqlite: unknown option {option:?}: expected sync=full or sync=normal"
                ));
            }
        }
    }
    Ok((PathBuf::from(path), sync))
}

/// The store's default options with `sync`.
pub(crate) fn options(sync: SqliteSync) -> SqliteOptions {
    with_sync(SqliteOptions::default(), sync)
}

fn with_sync(mut options: SqliteOptions, sync: SqliteSync) -> SqliteOptions {
    options.synchronous = sync;
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_sync() {
        let file = |s: &str| PathBuf::from(s);
        assert_eq!(parse("host.db"), Ok((file("host.db"), SqliteSync::Full)));
        assert_eq!(
            parse("/var/kms/host.db?sync=normal"),
            Ok((file("/var/kms/host.db"), SqliteSync::Normal))
        );
        assert_eq!(
            parse("host.db?sync=full"),
            Ok((file("host.db"), SqliteSync::Full))
        );
        assert_eq!(parse("what?.db"), Ok((file("what?.db"), SqliteSync::Full)));
        for bad in [
            "",
            "?sync=full",
            "host.db?sync=",
            "host.db?sync=off",
            "host.db?sync=FULL",
            "host.db?sync=normal&x=1",
            "host.db?journal=wal",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
