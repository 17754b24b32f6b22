"""natsq application: the HTTP gateway, the Dramatiq workers and their shared pieces."""
