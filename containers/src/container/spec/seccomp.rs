//! The default seccomp profile, the one containerd and Docker apply: every syscall not
//! listed fails with `EPERM`; the list is what ordinary programs need. Syscalls that only
//! make sense with a capability outside the default set (mount, unshare, setns, ptrace,
//! reboot, module loading, …) are allowed only when the container holds that capability,
//! `clone` may not create namespaces without `CAP_SYS_ADMIN`, and `clone3` (whose flags
//! seccomp cannot inspect) answers `ENOSYS` so libc falls back to `clone`.

use serde_json::{Value, json};

/// `EPERM`: what a refused syscall returns.
const EPERM: u32 = 1;
/// `ENOSYS`: "not implemented", which makes libc fall back from `clone3` to `clone`.
const ENOSYS: u32 = 38;
/// `CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET | CLONE_NEWCGROUP`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only with a capability beyond the default set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy"]),
    ("CAP_SYSLOG", &["syslog"]),
];

/// The architectures the profile covers, for this build's target.
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        _ => Vec::new(),
    }
}

/// Syscalls only some architectures have.
fn arch_specific() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["arch_prctl", "modify_ldt"],
        "aarch64" => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        _ => &[],
    }
}

/// The default profile (`linux.seccomp` of the runtime spec) for a container holding
/// `capabilities`.
pub fn default_profile(capabilities: &[&str]) -> Value {
    let allow = |names: Vec<&str>| json!({"names": names, "action": "SCMP_ACT_ALLOW"});
    let mut syscalls = vec![allow(ALLOWED.to_vec()), allow(arch_specific().to_vec())];
    // personality(2): only the default persona, Linux32 and the query.
    for persona in [0x0u64, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
        }));
    }
    for (capability, names) in BY_CAPABILITY {
        if capabilities.contains(capability) {
            syscalls.push(allow(names.to_vec()));
        }
    }
    if !capabilities.contains(&"CAP_SYS_ADMIN") {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": 0,
                "value": CLONE_NAMESPACE_FLAGS,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
        syscalls.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::security::DEFAULT_CAPABILITIES;

    fn allowed(profile: &Value, name: &str) -> bool {
        profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .any(|rule| {
                rule["action"] == "SCMP_ACT_ALLOW"
                    && rule.get("args").is_none()
                    && rule["names"]
                        .as_array()
                        .is_some_and(|n| n.contains(&json!(name)))
            })
    }

    #[test]
    fn the_default_set_may_not_mount_or_unshare_but_runs_programs() {
        let profile = default_profile(&DEFAULT_CAPABILITIES);
        for name in ["read", "execve", "socket", "chroot", "wait4"] {
            assert!(allowed(&profile, name), "{name}");
        }
        for name in [
            "mount", "unshare", "setns", "ptrace", "reboot", "bpf", "clone",
        ] {
            assert!(!allowed(&profile, name), "{name}");
        }
        let clone3 = profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .find(|r| r["names"] == json!(["clone3"]))
            .expect("clone3 rule");
        assert_eq!(clone3["errnoRet"], json!(ENOSYS));
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = DEFAULT_CAPABILITIES.to_vec();
        caps.push("CAP_SYS_ADMIN");
        let profile = default_profile(&caps);
        assert!(allowed(&profile, "mount"));
        assert!(allowed(&profile, "unshare"));
        assert!(allowed(&profile, "clone"));
    }

    #[test]
    fn no_syscall_is_listed_twice_in_the_base_list() {
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
