"""Chapter 6 (message queues): bugs in the producers, the email workers, the queue's settings on the broker
and the depth the lab reads from it.

Each bug is one edit of the pattern's source (``patterns/queue.py``) or of the wire experiment's worker, as a
developer would make it: the edit names the exact line it changes, so a mutant whose line has moved fails
loudly instead of testing nothing. Group 1 and 3 stop after the crash section; group 2 runs the whole chapter.
"""

from mutants import Mutant, edit, swap

NOTEBOOK = "06_message_queues"
QUEUE = "labsupport.patterns.queue"
WORKER = f"{QUEUE}:email_worker"
DECLARE = f"{QUEUE}:declare_queue"
PUBLISH = f"{QUEUE}:publish_job"

SEND = "await asyncio.sleep(service_time)  # talking to the mail server"
RECORD = "journal.done.add(job)  # the service's own record, written after the email"
SKIP = "if idempotent and job in journal.done:"
CONNECT = "client = await connect(broker, name)"

MUTANTS = [
    # group 1: the producers wait for the consumer, the depth is misread, the record is written first
    Mutant("producer-waits-for-room", "a producer waits until fewer than 10 jobs are queued before it publishes",
           NOTEBOOK, ("M1 producers on schedule", "M2 publish latency flat"),
           swap(PUBLISH, edit(("sent = journal.now()",
                               "sent = journal.now()\n"
                               "while (await js.consumer_info(queue.stream, queue.consumer)).num_pending >= 10:\n"
                               "    await asyncio.sleep(0.01)"))), group=1),
    Mutant("depth-reads-ack-pending", "the depth sampler reads num_ack_pending (jobs in flight) as the jobs waiting",
           NOTEBOOK, ("M2 peak depth", "M3 jobs waited"),
           swap(f"{QUEUE}:sample_depth", edit(('"waiting": info.num_pending', '"waiting": info.num_ack_pending'))),
           group=1),
    Mutant("record-before-send", "the email service records a job as finished before it sends the email",
           NOTEBOOK, ("M4 crash before the record",),
           swap(WORKER, edit((SEND, "journal.done.add(job)\n" + SEND))), group=1),
    # group 2: the whole chapter, with surgical bugs
    Mutant("record-keyed-by-subject", "the service's record of finished jobs keys them by subject, not by job id",
           NOTEBOOK, ("M2 none lost", "M3 nothing lost", "M5 none lost", "M5 panel none lost", "M6 none lost",
                      "M2 panel none lost"),
           swap(WORKER, edit((SKIP, "if idempotent and message.subject in journal.done:"),
                             (RECORD, "journal.done.add(message.subject)"))), group=2),
    Mutant("send-not-awaited", "the worker calls the mail server's coroutine without await, so it never waits",
           NOTEBOOK, ("M1 one sender's pace", "M5 drain time", "M5 workers' email rate"),
           swap(WORKER, edit((SEND, "asyncio.sleep(service_time)  # talking to the mail server"))), group=2),
    Mutant("max-deliver-once", "the consumer is declared with max_deliver=1, read as 'deliver each job once'",
           NOTEBOOK, ("M4 redelivery after the ack wait", "M4 sent twice", "M4 redelivery at the ack wait"),
           swap(DECLARE, edit(("max_deliver=-1", "max_deliver=1"))), group=2),
    Mutant("retention-limits", "the stream keeps the default limits retention, so acknowledged jobs stay on it",
           NOTEBOOK, ("M4 acked jobs leave the queue",),
           swap(DECLARE, edit(("retention=RetentionPolicy.WORK_QUEUE", "retention=RetentionPolicy.LIMITS"))), group=2),
    Mutant("stream-in-memory", "the stream keeps its jobs in memory, for speed, instead of in files",
           NOTEBOOK, ("M6 jobs survive a restart",),
           swap(DECLARE, edit(("storage=StorageType.FILE", "storage=StorageType.MEMORY"))), group=2),
    Mutant("fresh-id-per-publish", "each publish gets a fresh Nats-Msg-Id, so a retry is a new job to the broker",
           NOTEBOOK, ("M1 published with its id", "M4 retry stored once", "M4 dedupe is for publishes"),
           swap(PUBLISH, edit(('headers={"Nats-Msg-Id": job}',
                               'headers={"Nats-Msg-Id": f"{job}-{time.monotonic_ns()}"}'))), group=2),
    # last of its group: patching run_wire imports experiments.queues, which binds publish_job as it is then
    Mutant("worker-naks", "the wire experiment's worker answers the job with nak() where it means ack()",
           NOTEBOOK, ("M4 ack on the wire",),
           swap("labsupport.experiments.queues:run_wire", edit(("await message.ack_sync()", "await message.nak()"))),
           group=2),
    # group 3: the idempotent service's record and key, each made per worker instance
    Mutant("record-per-worker", "each worker keeps the record of finished jobs in its own memory",
           NOTEBOOK, ("M4 own record",),
           swap(WORKER, edit((CONNECT, "done = set()\n" + CONNECT), (SKIP, "if idempotent and job in done:"),
                             (RECORD, "done.add(job)"))), group=3),
    Mutant("key-per-worker", "the idempotency key sent to the mail server includes the worker's name",
           NOTEBOOK, ("M4 idempotency key",),
           swap(WORKER, edit(("key=job if idempotency_key", 'key=f"{name}:{job}" if idempotency_key'))), group=3),
]
