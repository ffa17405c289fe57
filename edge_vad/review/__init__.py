"""The review page: live cameras and recorded events in a browser, served by the runtime's HTTP server.

    app = ReviewApp(events_dir, live=live_state)          # edge_vad.review.routes
    HttpServer(metrics, host, port, app=app, guard=AccessGuard(...)).start()

Modules, one job each:
    jsonl_tail   the complete lines appended to a JSON-lines file since the last read (torn lines skipped)
    event_index  events.jsonl + feedback.jsonl merged per event id, filtered for the page
    feedback     "false alarm" / "confirmed" marks appended to feedback.jsonl (schema in its docstring)
    media        which recorded snapshot / clip file an event may serve; browser-playable clip copies
    live         the per-camera live state the pipeline updates (latest frame, recent smoothed scores)
    web          request / response types, security headers, the access guard (loopback, token)
    routes       the URL map of the page and its JSON API
    static/      the page itself: plain HTML, CSS and JavaScript, no build step, no CDN
"""
