"""The lab loop: idempotent servers, blocking callers, clean shutdown."""

import asyncio
import socket
import threading
import time
import urllib.request

import psutil
import pytest
import tornado.web

from conftest import scaled
from labsupport import LabError, lab, on_lab_loop, start_server, stop_server
from labsupport.lab import cancel_all


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hello")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=scaled(5)) as response:
        return response.read().decode()


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(scaled(1))
        return s.connect_ex(("127.0.0.1", port)) == 0


def lab_sockets() -> int:
    return len(psutil.Process().net_connections(kind="inet"))


def test_server_binds_loopback_on_an_os_chosen_port():
    server = start_server("hello", [(r"/", Hello)])
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    assert fetch(server.url + "/") == "hello"
    family_addresses = [c.laddr for c in psutil.Process().net_connections(kind="inet")
                        if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port]
    assert family_addresses and all(a.ip == "127.0.0.1" for a in family_addresses)


def test_starting_a_server_again_replaces_it():
    first = start_server("twice", [(r"/", Hello)])
    second = start_server("twice", [(r"/", Hello)])
    assert list(lab.servers).count("twice") == 1
    assert lab.servers["twice"] is second
    assert not port_is_open(first.port)
    assert fetch(second.url + "/") == "hello"
    stop_server("twice")
    assert "twice" not in lab.servers


def test_server_answers_while_the_caller_blocks():
    server = start_server("busy", [(r"/", Hello)])
    answers = []
    asker = threading.Thread(target=lambda: answers.append(fetch(server.url + "/")))
    asker.start()
    time.sleep(scaled(0.5))  # the "cell" blocks; the lab loop keeps serving
    assert answers == ["hello"]
    asker.join()


def test_plain_and_awaitable_forms_run_on_the_lab_loop():
    @on_lab_loop
    async def where():
        return threading.current_thread().name

    assert where() == "lab-loop"
    assert asyncio.run(where.aio()) == "lab-loop"


def test_waiting_from_the_lab_loop_itself_is_a_clear_error():
    async def nested():
        lab.run(asyncio.sleep(0))

    with pytest.raises(LabError, match="await"):
        lab.run(nested())


def test_a_timeout_stops_the_work_and_says_so():
    cancelled = threading.Event()

    async def slow():
        try:
            await asyncio.sleep(scaled(30))
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(LabError, match="did not finish"):
        lab.run(slow(), timeout=0.2)
    assert cancelled.wait(scaled(5))


def test_work_that_raises_timeout_error_reports_it_instead_of_hanging():
    async def gives_up():
        await asyncio.wait_for(asyncio.sleep(10), timeout=0.01)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        lab.run(gives_up(), timeout=scaled(20))
    assert time.monotonic() - started < scaled(5)


def test_shutdown_leaves_no_thread_socket_or_task():
    lab.shutdown()
    before = lab_sockets()
    server = start_server("leftovers", [(r"/", Hello)])
    fetch(server.url + "/")
    loop = lab.loop()
    lab.run(asyncio.sleep(0))
    lab.shutdown()
    assert not any(t.name == "lab-loop" for t in threading.enumerate())
    assert loop.is_closed()
    assert lab.servers == {}
    deadline = time.monotonic() + scaled(5)
    while lab_sockets() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab_sockets() <= before
    assert not port_is_open(server.port)


def test_shutdown_twice_is_harmless():
    lab.shutdown()
    lab.shutdown()


def test_interpreter_exit_stops_the_lab_without_hanging():
    import subprocess
    import sys

    script = (
        "import tornado.web\n"
        "from labsupport import start_server\n"
        "class H(tornado.web.RequestHandler):\n"
        "    def get(self): self.write('x')\n"
        "print(start_server('exit-test', [(r'/', H)]).port, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    assert not port_is_open(int(done.stdout.strip()))


def test_lab_work_does_not_wait_while_the_collector_walks_the_kernels_older_objects():
    import gc

    older = [[i] for i in range(500_000)]  # objects a kernel holds late in a notebook
    began = time.perf_counter()
    gc.collect()
    outside = time.perf_counter() - began

    async def collect() -> float:
        began = time.perf_counter()
        gc.collect()
        return time.perf_counter() - began

    inside = lab.run(collect())
    assert inside < outside / 5, (inside, outside)
    assert gc.get_freeze_count() == 0 and len(older) == 500_000  # all unfrozen again afterwards


def test_overlapping_lab_work_keeps_the_older_objects_frozen_until_the_last_ends():
    import gc

    from labsupport.collector import older_objects_frozen

    with older_objects_frozen():
        made_inside = []   # tracked, made after the freeze: collected as usual unless something froze again
        with older_objects_frozen():
            pass
        # The count itself may fall meanwhile (another thread frees frozen objects), so it is not compared.
        assert gc.get_freeze_count() > 0 and any(o is made_inside for o in gc.get_objects())
    assert gc.get_freeze_count() == 0


def test_a_stuck_lab_call_says_where_the_lab_loop_waited():
    async def waits_for_ever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(LabError, match="did not finish") as stopped:
        lab.run(waits_for_ever(), timeout=0.3, label="stuck call")
    assert "waits_for_ever (test_lab.py:" in "".join(stopped.value.__notes__)


def test_cancel_all_ends_a_task_that_swallowed_its_first_cancel():
    """Python 3.11's wait_for can swallow a cancel (CPython gh-86296); one cancel and a wait would hang here."""
    swallowed = []

    async def carries_on_once() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)   # what wait_for does when its future finished in the same moment

    async def stop_it() -> bool:
        task = asyncio.create_task(carries_on_once())
        await asyncio.sleep(0.05)
        await cancel_all([task])
        return task.cancelled()

    assert lab.run(stop_it(), timeout=scaled(5)) and swallowed


def test_cancel_all_names_a_task_that_ignores_every_cancel(monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("labsupport.lab"), "CANCEL_GIVE_UP", 0.5)  # the module, not `lab`
    finished = []

    async def swallows_everything() -> None:
        while not finished:
            try:
                await asyncio.sleep(0.01)
            except BaseException:  # what a bare except: does
                pass

    async def stop_it() -> None:
        task = asyncio.create_task(swallows_everything())
        await asyncio.sleep(0.05)
        try:
            await cancel_all([task])
        finally:
            finished.append(True)  # let it end, so that it does not outlive the test
            await asyncio.wait([task], timeout=1)

    with pytest.raises(LabError, match="swallows_everything.*bare `except:`"):
        lab.run(stop_it(), timeout=scaled(5))
