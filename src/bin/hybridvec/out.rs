//! Standard output that never panics: a closed pipe or a full disk (`> /dev/full`) is an
//! error naming standard output, which `main` reports with exit status 2.

use hybridvec::Error;
use std::io::Write;

/// Writes one line to standard output (a `LineWriter`, so the line is written through
/// before this returns and a failure shows here).
pub fn line(args: std::fmt::Arguments<'_>) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(error)
}

/// Flushes whatever standard output still holds.
pub fn flush() -> Result<(), Error> {
    std::io::stdout().flush().map_err(error)
}

/// A failed write to standard output, named.
pub fn error(source: std::io::Error) -> Error {
    Error::FileIo {
        path: "standard output".into(),
        source,
    }
}

/// `println!` that returns the error from the enclosing function instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::out::line(format_args!($($t)*))?
    };
}
pub(crate) use outln;
