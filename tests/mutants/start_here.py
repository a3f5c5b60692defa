"""Chapter 0 (the lab itself): bugs in the lab thread, the wire meter, the feed and shutdown."""

from mutants import Mutant, swap

NOTEBOOK = "00_start_here"


def _stopping_after_each_call(run):
    def run_then_stop(self, coro, **kwargs):
        try:
            return run(self, coro, **kwargs)
        finally:  # the bug: "no need to spin while the learner reads", so the loop stops between calls
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)
    return run_then_stop


def _counting_down_as_up(carry):
    def carry_miscounted(self, chunk):
        carry(self, chunk)
        if self.direction == "down":  # the bug: a copy-pasted branch adds the reply's bytes to bytes_up
            self.relay.conn.bytes_down -= len(chunk)
            self.relay.conn.bytes_up += len(chunk)
    return carry_miscounted


def _waking_one_reader(_wake_readers):
    from labsupport.feed import _wake

    def wake_first(self):
        for woken in self._readers:  # the bug: a `break` left in while debugging
            _wake(woken)
            break
    return wake_first


def _forgetting_servers(stop_everything):
    async def stop_stoppers_only(self):
        self.servers.clear()  # the bug: the servers are forgotten, not stopped; their ports stay open
        await stop_everything(self)
    return stop_stoppers_only


MUTANTS = [
    Mutant("lab-loop-stops-between-calls", "the lab's loop runs only while a call waits for it", NOTEBOOK,
           ("LAB own thread",), swap("labsupport.lab:Lab.run", _stopping_after_each_call)),
    Mutant("meter-counts-down-as-up", "the meter adds the server's bytes to the client's count", NOTEBOOK,
           ("LAB meter bytes",), swap("labsupport.wire:_Lane.carry", _counting_down_as_up)),
    Mutant("feed-wakes-one-reader", "a new event wakes only the first waiting reader", NOTEBOOK,
           ("LAB push delivered",), swap("labsupport.feed:Feed._wake_readers", _waking_one_reader)),
    Mutant("shutdown-forgets-servers", "shutdown stops tasks and helpers but forgets the servers", NOTEBOOK,
           ("LAB shutdown",), swap("labsupport.lab:Lab._stop_everything", _forgetting_servers)),
]
