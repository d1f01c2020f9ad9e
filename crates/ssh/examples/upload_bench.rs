//! Measures libssh2 upload speed: SFTP with ~1 MiB writes (what `deploy` uses) against an SCP channel.
//! `upload_bench HOST USER KEY KNOWN_HOSTS FILE REMOTE_DIR [ROUNDS]` (host key checking is the caller's:
//! this is a measuring tool for a test bed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        return Err(
            "usage: upload_bench HOST USER KEY KNOWN_HOSTS FILE REMOTE_DIR [ROUNDS]".into(),
        );
    }
    let rounds: usize = a.get(6).map_or(Ok(3), |r| r.parse())?;
    let t = Instant::now();
    let tcp = TcpStream::connect((a[0].as_str(), 22))?;
    let mut s = ssh2::Session::new()?;
    s.set_tcp_stream(tcp);
    s.set_timeout(60_000);
    s.handshake()?;
    s.userauth_pubkey_file(&a[1], None, Path::new(&a[2]), None)?;
    println!("connect+auth: {:?}", t.elapsed());
    let size = std::fs::metadata(&a[4])?.len();
    let mib = size as f64 / 1048576.0;
    for chunk in [32 * 1024, 30_000 * 35, 4 << 20] {
        for _ in 0..rounds {
            let t = Instant::now();
            let sftp = s.sftp()?;
            let mut f = sftp.create(Path::new(&format!("{}/bench.sftp", a[5])))?;
            let mut src = std::fs::File::open(&a[4])?;
            let mut buf = vec![0u8; chunk];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n])?;
            }
            f.close()?;
            let e = t.elapsed().as_secs_f64();
            println!("sftp chunk {chunk:>8}: {:.0} MiB/s ({e:.2}s)", mib / e);
        }
    }
    for _ in 0..rounds {
        let t = Instant::now();
        let mut ch = s.scp_send(Path::new(&format!("{}/bench.scp", a[5])), 0o644, size, None)?;
        let mut src = std::fs::File::open(&a[4])?;
        let mut buf = vec![0u8; 30_000 * 35];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ch.write_all(&buf[..n])?;
        }
        ch.send_eof()?;
        ch.wait_eof()?;
        ch.close()?;
        ch.wait_close()?;
        let e = t.elapsed().as_secs_f64();
        println!("scp channel        : {:.0} MiB/s ({e:.2}s)", mib / e);
    }
    let _ = &a[3];
    Ok(())
}
