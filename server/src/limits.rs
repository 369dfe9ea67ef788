//! Process limits a broker outgrows: every partition keeps files open (its segment log and
//! index, and in cluster mode its Raft log), and every client a socket. Shells and service
//! managers commonly start processes with a soft limit of 1,024 open files under a hard limit
//! hundreds of times larger, which a few hundred partitions exhaust; like Go's runtime and
//! most servers, the broker raises its soft limit to the hard one at start.

/// Raises the soft open-files limit to the hard limit. Returns (before, after) when it changed.
pub fn raise_open_files() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
                return None;
            }
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return None;
            }
            Some((before, lim.rlim_cur))
        }
    }
    #[cfg(not(unix))]
    None
}

/// The current soft open-files limit.
pub fn open_files() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed in.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            return Some(lim.rlim_cur);
        }
        None
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        super::raise_open_files();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(super::open_files(), Some(lim.rlim_cur));
    }
}
