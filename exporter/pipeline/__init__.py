"""One poll cycle, and the sender that drains the outbox.

``poller``     due alarms -> get_event_log -> parse -> diff against seen -> map -> commit (seen + outbox)
``lifecycle``  when an alarm is over, and when it is retired
``sender``     outbox -> sink, deleting rows only on SUCCESS, backing off on failure, parking rejections
"""
