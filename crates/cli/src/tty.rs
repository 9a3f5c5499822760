//! The keystore passphrase prompt on the terminal. Echo is turned off *before* the prompt is
//! shown, so nothing typed or pasted once it appears is ever echoed (a prompt printed first and
//! echo turned off after leaves a window in which a fast paste shows on screen), and input typed
//! before the prompt is discarded. Echo comes back when the line is read or the prompt fails.

use std::fs::File;
use std::io::{Read, Write};

use rustix::termios::{LocalModes, OptionalActions, Termios, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// Longest passphrase read (bytes).
const PASSPHRASE_BYTES_MAX: usize = 1024;

/// Puts the terminal's settings back when dropped.
struct Restore<'a> {
    tty: &'a File,
    saved: Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.tty, OptionalActions::Now, &self.saved);
    }
}

/// Shows `prompt` on the controlling terminal and reads one line with echo off.
pub fn read_hidden(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut hidden = saved.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    // The Enter that ends the line still moves the cursor on.
    hidden.local_modes.insert(LocalModes::ECHONL);
    // TCSAFLUSH: the change waits for pending output and drops input not read yet.
    tcsetattr(&tty, OptionalActions::Flush, &hidden)?;
    let _restore = Restore { tty: &tty, saved };
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;
    let mut line = Zeroizing::new(vec![0u8; PASSPHRASE_BYTES_MAX + 1]);
    let mut len = 0;
    while !line[..len].contains(&b'\n') {
        let n = (&tty).read(&mut line[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if len > PASSPHRASE_BYTES_MAX {
            return Err(std::io::Error::other(format!("a passphrase is at most {PASSPHRASE_BYTES_MAX} bytes")));
        }
    }
    let end = line[..len].iter().position(|b| *b == b'\n').unwrap_or(len);
    let text = std::str::from_utf8(&line[..end]).map_err(|_| std::io::Error::other("the passphrase is not UTF-8"))?;
    Ok(Zeroizing::new(text.trim_end_matches('\r').to_string()))
}
