"""Helpers the benchmark scripts share: free ports, a process's CPU time and RSS, and starting
and stopping a standalone broker or a 3-node cluster of the binary under test."""
import os, socket, subprocess, sys, time

from confluent_kafka.admin import AdminClient

CLK = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    """User + system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def start_brokers(binary, target, tmp, wait_s=60):
    """Starts a standalone broker or a 3-node cluster (`target` "standalone" or "cluster") with
    data and logs under `tmp`; returns (processes, bootstrap) once every node serves Metadata."""
    procs, bootstrap = [], []
    if target == "standalone":
        port = free_port()
        procs.append(subprocess.Popen([binary, "--kafka-addr", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/s"],
                                      stderr=open(f"{tmp}/s.log", "w")))
        procs[-1].log_path = f"{tmp}/s.log"
        bootstrap.append(f"127.0.0.1:{port}")
    else:
        subprocess.run([binary, "certs", "--nodes", "1,2,3", "--out", f"{tmp}/certs"], check=True,
                       stdout=subprocess.DEVNULL)
        raft = [free_port(socket.SOCK_DGRAM) for _ in range(3)]
        peers = ",".join(f"{i + 1}@127.0.0.1:{raft[i]}" for i in range(3))
        for i in range(3):
            port = free_port()
            procs.append(subprocess.Popen(
                [binary, "--node-id", str(i + 1), "--kafka-addr", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/d{i + 1}",
                 "raft-cluster", "--raft-addr", f"127.0.0.1:{raft[i]}", "--peers", peers, "--tls-dir", f"{tmp}/certs"],
                stderr=open(f"{tmp}/n{i + 1}.log", "w")))
            procs[-1].log_path = f"{tmp}/n{i + 1}.log"
            bootstrap.append(f"127.0.0.1:{port}")
    bs = ",".join(bootstrap)
    deadline = time.time() + wait_s
    while True:
        try:
            md = AdminClient({"bootstrap.servers": bs}).list_topics(timeout=2)
            if len(md.brokers) == len(procs):
                break
        except Exception:
            pass
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            stop(procs)
            sys.exit(f"{target} did not start; logs in {tmp}")
        time.sleep(0.2)
    return procs, bs


def stop(procs, wait_s=30):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()


def kill9_and_restart(procs):
    """Kills every process with SIGKILL, then starts each again with its arguments (logs
    appended); returns the new processes."""
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    fresh = []
    for p in procs:
        q = subprocess.Popen(p.args, stderr=open(p.log_path, "a"))
        q.log_path = p.log_path
        fresh.append(q)
    return fresh
