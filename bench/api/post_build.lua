-- wrk -s post_build.lua: every request POSTs the recipe in the file named by
-- $KILN_BENCH_RECIPE as application/json (run.py sets it).
local f = assert(io.open(assert(os.getenv("KILN_BENCH_RECIPE")), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
