"""CPU seconds of every process a command starts, and the command's wall time.

    .venv/bin/python bench/process_cpu.py COMMAND [ARG ...]

Polls /proc every 0.1 s for the command's process tree (the flow's process, Prefect's temporary
server, the reader processes) and prints each one's last CPU figure: a reader that exits without
being waited for is missing from the CPU figures a parent's wait4 reports.
"""

import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for thread in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{thread}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def cpu_seconds(pid: int) -> tuple[str, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/cmdline") as f:
        command = f.read().replace("\0", " ")[:90]
    return command, (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def main() -> None:
    started = time.perf_counter()
    process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, tuple[str, float]] = {}
    while process.poll() is None:
        todo = [process.pid]
        while todo:
            pid = todo.pop()
            try:
                command, cpu = cpu_seconds(pid)
                todo += children(pid)
            except OSError:
                continue  # it ended between two reads
            seen[pid] = (command or seen.get(pid, ("",))[0], cpu)
        time.sleep(0.1)
    print(f"wall {time.perf_counter() - started:.1f} s, exit status {process.returncode}")
    for pid, (command, cpu) in seen.items():
        print(f"  {cpu:7.2f} CPU s  {pid} {command}")
    print(f"  {sum(cpu for _, cpu in seen.values()):7.2f} CPU s in all")


if __name__ == "__main__":
    main()
