"""Pure functions from parsed BlueKing records to SDK-free OpenTelemetry values.

``ids``         stable record uids and the alarm's deterministic trace/span ids
``attributes``  the ``bk.*`` alarm attributes and the dotted ``extend_info`` leaves
``logs``        FlowRecord + AlarmContext -> LogEvent (CONTRACT.md "As an OpenTelemetry log record")
``spans``       an alarm's records -> SpanRecord (CONTRACT.md "As spans")
"""
