-- wrk: POST a 4 KiB body on every request (a form or a JSON API call), then the RESULT line
-- latency.lua prints.
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
dofile("benches/load/latency.lua")
