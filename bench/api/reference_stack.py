# Copied from /work/shared/bench/reference_stack.py (the project's shared
# benchmark material, DESIGN.md "Reference facts") so the repository is
# self-contained; keep it identical to the original below this note.
#
# The reference Python stack for HTTP benchmarks: FastAPI + uvicorn serving /health with the
# security-header middleware of the original design. Run: /usr/bin/python3 -m uvicorn reference_stack:app --port 8765
from fastapi import FastAPI, Request
from fastapi.middleware.trustedhost import TrustedHostMiddleware
app = FastAPI()
app.add_middleware(TrustedHostMiddleware, allowed_hosts=["localhost", "127.0.0.1"])

@app.middleware("http")
async def security_headers(request: Request, call_next):
    resp = await call_next(request)
    resp.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp

@app.get("/health")
async def health():
    return {"status": "healthy"}
