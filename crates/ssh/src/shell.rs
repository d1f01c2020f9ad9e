//! One remote shell per host for the whole run.
//!
//! A call used to open a channel, start `bash -s`, send the whole library and read its output: a
//! dozen round trips and library parses per host per deploy. Now each connection starts one bash
//! (see [`serve_command`]) that reads the library once and then serves calls (`bg_serve` in
//! `remote.sh`): every call line is sent on that same channel, ended by a NUL byte. The shell runs each call
//! in a subshell of its own (so calls see what a fresh shell would) and answers with one frame:
//! `STATUS OUT_BYTES ERR_BYTES\n`, the output, the errors.
//!
//! A call that fails to come back in time (or a shell that went away) leaves the shell in a state
//! nobody knows: it is dropped, and the next call starts a new one.

use crate::conn::Output;
use crate::error::SshMsg;
use bluegreen_core::remote::{library_sent, serve_command};
use ssh2::{Channel, Session};
use std::io::{Read, Write};
use std::time::Duration;

/// A host's connection: its session, and the remote shell calls run on.
pub(crate) struct Remote {
    /// The SSH session (SFTP uploads use it directly).
    pub sess: Session,
    shell: Option<Shell>,
}

struct Shell {
    ch: Channel,
    /// Bytes read past the last frame (none, unless the shell misbehaves).
    buf: Vec<u8>,
}

fn ssh_msg(e: ssh2::Error) -> String {
    SshMsg(&e).to_string()
}

impl Remote {
    /// Wraps a connected session; the shell starts with the first call (or [`Remote::warm`]).
    pub fn new(sess: Session) -> Remote {
        Remote { sess, shell: None }
    }

    /// Starts the shell ahead of the first call, so that the library is read while other hosts
    /// still connect. A failure here is left for the first call to report.
    pub fn warm(&mut self) {
        if self.shell.is_none() {
            self.shell = Shell::open(&self.sess).ok();
        }
    }

    /// Runs one call line (see `RemoteCall::call_line`) and collects its output.
    ///
    /// The call may stay silent for the session's timeout (`ssh.command_timeout`) plus `wait`, the
    /// time it waits on purpose (a stop's grace period, for one): its own bound. A dead peer is
    /// detected sooner, by the socket (see `conn::watch_liveness`).
    pub fn call(&mut self, line: &str, wait: Duration) -> Result<Output, String> {
        let before = self.sess.timeout();
        if !wait.is_zero() {
            let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
            self.sess.set_timeout(before.saturating_add(ms));
        }
        let r = self.call_inner(line);
        self.sess.set_timeout(before);
        if !matches!(r, Ok(Answer::Frame(_))) {
            // Unknown state (timed out, or the shell is gone): never reuse it.
            if let Some(mut sh) = self.shell.take() {
                let _ = sh.ch.close();
            }
        }
        match r {
            Ok(Answer::Frame(out)) | Ok(Answer::ShellEnded(out)) => Ok(out),
            Err(e) => Err(e),
        }
    }

    fn call_inner(&mut self, line: &str) -> Result<Answer, String> {
        if self.shell.is_none() {
            self.shell = Some(Shell::open(&self.sess)?);
        }
        let sh = self.shell.as_mut().ok_or("no shell")?;
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line.as_bytes());
        msg.push(0);
        sh.ch
            .write_all(&msg)
            .and_then(|()| sh.ch.flush())
            .map_err(|e| format!("cannot send the call: {e}"))?;
        sh.read_frame()
    }
}

enum Answer {
    /// The call's frame.
    Frame(Output),
    /// The shell ended before it answered (it could not read the library, or was killed): its
    /// exit status and errors, as a one-call shell's would be.
    ShellEnded(Output),
}

impl Shell {
    fn open(sess: &Session) -> Result<Shell, String> {
        let mut ch = sess.channel_session().map_err(ssh_msg)?;
        ch.exec(&serve_command()).map_err(ssh_msg)?;
        ch.write_all(library_sent().as_bytes())
            .and_then(|()| ch.flush())
            .map_err(|e| format!("cannot send the library: {e}"))?;
        Ok(Shell {
            ch,
            buf: Vec::new(),
        })
    }

    /// Reads more of standard output into the buffer; false at its end.
    fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.ch.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading output: {e}")),
            }
        }
    }

    fn read_frame(&mut self) -> Result<Answer, String> {
        loop {
            if let Some((out, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Answer::Frame(out));
            }
            if !self.fill()? {
                if self.buf.is_empty() {
                    return self.ended().map(Answer::ShellEnded);
                }
                return Err("the remote shell ended in the middle of an answer".into());
            }
        }
    }

    /// The shell's end: its exit status, and everything it wrote to standard error.
    fn ended(&mut self) -> Result<Output, String> {
        let mut stderr = Vec::new();
        self.ch
            .stderr()
            .read_to_end(&mut stderr)
            .map_err(|e| format!("reading errors: {e}"))?;
        self.ch.wait_eof().map_err(ssh_msg)?;
        self.ch.close().map_err(ssh_msg)?;
        self.ch.wait_close().map_err(ssh_msg)?;
        let mut status = self.ch.exit_status().map_err(ssh_msg)?;
        let mut stderr = String::from_utf8_lossy(&stderr).into_owned();
        if let Ok(sig) = self.ch.exit_signal() {
            if let Some(name) = sig.exit_signal {
                status = -1;
                stderr.push_str(&format!("\nkilled by SIG{name}"));
            }
        }
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&self.buf).into_owned(),
            stderr,
        })
    }
}

/// The first frame in `buf` and the bytes it takes, once all of it is there.
fn parse_frame(buf: &[u8]) -> Result<Option<(Output, usize)>, String> {
    let Some(header_end) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let header = String::from_utf8_lossy(&buf[..header_end]);
    let mut nums = header.split(' ').map(str::parse::<usize>);
    let (Some(Ok(status)), Some(Ok(out_len)), Some(Ok(err_len)), None) =
        (nums.next(), nums.next(), nums.next(), nums.next())
    else {
        return Err(format!("the remote shell answered '{header}', not a frame"));
    };
    let start = header_end + 1;
    let end = start + out_len + err_len;
    if buf.len() < end {
        return Ok(None);
    }
    let (out, err) = buf[start..end].split_at(out_len);
    Ok(Some((
        Output {
            status: i32::try_from(status).unwrap_or(i32::MAX),
            stdout: String::from_utf8_lossy(out).into_owned(),
            stderr: String::from_utf8_lossy(err).into_owned(),
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluegreen_core::remote::{RemoteCall, RemoteFn};
    use bluegreen_core::Word;
    use std::process::{Command, Stdio};

    /// Runs `calls` through one local `bash -s` serving them, as a host's shell would.
    fn serve(calls: &[&str], env: &[(&str, &str)]) -> Vec<Output> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(serve_command())
            .env_remove("LC_ALL")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash");
        let mut input = library_sent().into_bytes();
        for c in calls {
            input.extend_from_slice(c.as_bytes());
            input.push(0);
        }
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        let out = child.wait_with_output().expect("bash ran");
        let mut buf = &out.stdout[..];
        let mut frames = Vec::new();
        while let Some((o, used)) = parse_frame(buf).expect("a frame") {
            frames.push(o);
            buf = &buf[used..];
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(buf)
        );
        frames
    }

    #[test]
    fn each_call_gets_its_own_frame_and_a_fresh_subshell() {
        let probe = RemoteCall::new(
            RemoteFn::Probe,
            ["http://127.0.0.1:1/", "200", "", "1"]
                .into_iter()
                .map(Word::lit)
                .collect(),
        );
        let probe = probe.call_line(|_| Err::<String, ()>(())).expect("literal");
        let f = serve(
            &[
                &probe,
                "bg_main nope\n",
                // errexit holds in a call, as in a fresh `bash -s`; bytes are counted as bytes.
                "X=set; echo 'héllo\nworld'; false; echo never\n",
                // Nothing is left over from the call before; stdin is empty; the locale is the
                // shell's own.
                "echo \"${X-unset} $(cat) ${LC_ALL-unset}\"; exit 7\n",
                "bg_main unknown_fn 'a b'\n",
            ],
            &[],
        );
        assert_eq!(f.len(), 5);
        assert_eq!((f[0].status, f[0].stdout.as_str()), (0, "bad 000\n"));
        assert_eq!(f[1].status, 1);
        assert!(
            f[1].stderr.contains("unknown remote function 'nope'"),
            "{}",
            f[1].stderr
        );
        assert_eq!((f[2].status, f[2].stdout.as_str()), (1, "héllo\nworld\n"));
        assert_eq!((f[3].status, f[3].stdout.as_str()), (7, "unset  unset\n"));
        assert_eq!(f[4].status, 1);
    }

    #[test]
    fn a_call_sees_the_locale_the_shell_started_with() {
        let f = serve(
            &["echo \"$LC_ALL\"; printf %s é | wc -m\n"],
            &[("LC_ALL", "C.UTF-8")],
        );
        assert_eq!(f[0].stdout, "C.UTF-8\n1\n");
    }

    #[test]
    fn frames_wait_for_all_their_bytes() {
        assert!(parse_frame(b"0 5 0\nabc").expect("header").is_none());
        assert!(parse_frame(b"0 5").expect("no header yet").is_none());
        assert!(parse_frame(b"hello\n").is_err());
        let (o, used) = parse_frame(b"3 2 1\nokEnext").expect("ok").expect("whole");
        assert_eq!(
            (o.status, o.stdout.as_str(), o.stderr.as_str(), used),
            (3, "ok", "E", 9)
        );
    }
}
