"""The browser native-messaging host: `lmsupervisor native-host` (issue 10 item 2)."""
