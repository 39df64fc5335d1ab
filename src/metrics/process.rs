//! The agent's own resource use, read from /proc/self at each scrape (Linux).

/// Resident memory in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    rss_from_status(&status)
}

fn rss_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Open file descriptors (entries of /proc/self/fd, less the one reading it).
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    let count = entries.filter(Result::is_ok).count() as u64;
    Some(count.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_status_file() {
        let status = "Name:\tedge-agent\nVmPeak:\t  9000 kB\nVmRSS:\t    8120 kB\nThreads:\t5\n";
        assert_eq!(rss_from_status(status), Some(8120 * 1024));
        assert_eq!(rss_from_status("Name:\tx\n"), None);
        assert_eq!(rss_from_status("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
        // stdin, stdout, stderr at least.
        assert!(open_fds().is_some_and(|n| n >= 3));
    }
}
