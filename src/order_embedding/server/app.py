"""The web app: a JSON API over a folder of runs, and the pages that use it.

Routes never block the event loop: file reads and searches run on worker threads,
and a request that needs a model loaded or a split encoded waits for that job
(see :mod:`.jobs`) without holding a thread. Paths in answers are shown relative
to the folders the server was started with (see :class:`.paths.PathView`).
"""
from __future__ import annotations

import asyncio
import html
import os
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import runs
from .errors import validation_detail
from .store import (
    MAX_K,
    MAX_MODELS,
    MAX_QUERY_CHARS,
    NotFound,
    RunStore,
    Unavailable,
    safe_path,
)

STATIC = Path(__file__).parent / "static"
#: Most queries one browser page lists.
MAX_PAGE = 50


def placeholder_svg(label: str) -> str:
    """A grey square naming an image that has no file to show."""
    text = html.escape(label)
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">'
            '<rect width="128" height="128" fill="#d9d9d9"/>'
            f'<text x="64" y="70" font-family="sans-serif" font-size="14" text-anchor="middle" fill="#444">{text}</text>'
            '</svg>')


async def after(prepare: Callable[..., Any], work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` on a worker thread once ``prepare(*args[:2])``'s job (if any) is done, awaited without a thread."""
    def attempt() -> tuple[Any, Any]:
        job = prepare(*args[:2])
        return (job, None) if job is not None else (None, work(*args))

    job, out = await run_in_threadpool(attempt)
    if job is None:
        return out
    await asyncio.wrap_future(job)
    return await run_in_threadpool(work, *args)


def create_app(runs_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
               image_root: str | os.PathLike | None = None, device: str = "cpu",
               max_models: int = MAX_MODELS, indexes: Sequence[str | os.PathLike] = (),
               prepare: bool = True) -> FastAPI:
    """The app serving the runs under ``runs_dir``; ``data_dir`` overrides the runs' data sets,
    ``image_root`` is the folder image files are read from (nothing outside it is served), at
    most ``max_models`` run models stay loaded, ``indexes`` are on-disk image indexes to search,
    and with ``prepare`` the test split of each listed run is encoded in the background.
    A relative ``runs_dir`` is shown as given; an absolute one by its folder name."""
    store = RunStore(runs_dir, data_dir, image_root, device, max_models=max_models, indexes=indexes, prepare=prepare)
    view = store.view

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        store.close()

    app = FastAPI(title="order-embedding runs", docs_url=None, openapi_url="/api/openapi.json", redoc_url=None,
                  lifespan=lifespan)
    app.state.store = store

    @app.middleware("http")
    async def no_store(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/api/") or request.url.path == "/":
            response.headers["Cache-Control"] = "no-store"
        return response

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": view.text(message)}, status_code=status, headers={"Cache-Control": "no-store"})

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(runs.RunError)
    async def run_error(request: Request, exc: runs.RunError) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, validation_detail(exc.errors()))

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        return error(409, f"{exc.filename or 'a file'}: {exc.strerror or exc}")

    def image_url(run: str, split: str):
        return lambda i: f"/api/image?run={quote(run, safe='')}&split={quote(split, safe='')}&index={i}"

    def shown(row: dict[str, Any]) -> dict[str, Any]:
        return view.json(row)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/runs")
    async def list_runs() -> dict[str, Any]:
        """Every run: kind, hyperparameters, progress, best validation point, or the error that stops reading it."""
        rows = await run_in_threadpool(store.summaries)
        return {"runs_dir": view.path(store.runs_dir.resolve()),
                "data_dir": None if store.data_dir is None else view.path(store.data_dir.resolve()),
                "image_root": None if store.image_root is None else view.path(store.image_root),
                "limits": {"max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K, "max_page": MAX_PAGE},
                "runs": [shown(r) for r in rows]}

    def one_run(run_id: str) -> dict[str, Any]:
        row = store.summary(run_id)
        try:
            row["config"] = store.config(run_id)
        except runs.RunError:
            row["config"] = None
        return shown(row)

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        """One run's summary and its full ``config.json`` (paths shown relative to the served folders)."""
        return await run_in_threadpool(one_run, run_id)

    @app.get("/api/metrics")
    async def metrics(run: Annotated[list[str], Query(max_length=32)]) -> dict[str, Any]:
        """Training and validation points of the given runs, grouped by model, against examples seen."""
        answers = [await run_in_threadpool(store.log, r) for r in run]
        return {"runs": [{**a, "error": a["error"] and view.text(a["error"])} for a in answers]}

    @app.get("/api/results")
    async def results(run: str) -> dict[str, Any]:
        """The final figures the run folder records (``results.json``), as written, paths shown relative."""
        return shown(await run_in_threadpool(store.results, run))

    @app.get("/api/probe")
    async def probe(run: str, a: str = Query(..., max_length=MAX_QUERY_CHARS),
                    b: str | None = Query(None, max_length=MAX_QUERY_CHARS), split: str = "test",
                    image: int | None = Query(None, ge=0)) -> dict[str, Any]:
        """The model's errors for typed sentences: ``E(a, b)`` and ``E(b, a)``, or ``E(a, image)`` for an image of a split."""
        if (b is None) == (image is None):
            raise ValueError("give exactly one of b (a second sentence) or image (an image index)")
        if image is None:
            return await after(lambda run_id, _: store.model_job(run_id), store.probe, run, a, b)
        out = await after(store.prepare, lambda r, s, text, i: store.probe(r, text, None, s, i), run, split, a, image)
        out["image_url"] = image_url(run, split)(image)
        return out

    @app.get("/api/curves")
    async def curves(run: str, split: str = "test") -> dict[str, Any]:
        """Recall against K (fraction of queries whose correct item ranks <= K), both directions, with metrics."""
        return await after(store.prepare, store.curves, run, split)

    @app.get("/api/browse")
    async def browse(run: str, split: str = "test", direction: Literal["t2i", "i2t"] = "t2i",
                     offset: int = Query(0, ge=0), limit: int = Query(10, ge=1, le=MAX_PAGE),
                     failures: bool = False) -> dict[str, Any]:
        """A page of captions (t2i) or images (i2t) with the model's top 10 and the rank of the right item."""
        return await after(store.prepare, store.browse, run, split, direction, offset, limit, failures,
                           image_url(run, split))

    @app.get("/api/search")
    async def search(run: str, split: str = "test", q: str | None = Query(None, max_length=MAX_QUERY_CHARS),
                     image: int | None = Query(None, ge=0), k: int = Query(10, ge=1, le=MAX_K)) -> dict[str, Any]:
        """Top ``k`` images of the split for a sentence ``q``, or top ``k`` captions for image ``image``."""
        if (q is None) == (image is None):
            raise ValueError("give exactly one of q (a sentence) or image (an image index)")
        if q is not None:
            out = await after(store.prepare, store.search_text, run, split, q, k)
            url = image_url(run, split)
            for item in out["results"]:
                item["image_url"] = url(item["image"])
            return out
        out = await after(store.prepare, store.search_image, run, split, image, k)
        out["image_url"] = image_url(run, split)(image)
        return out

    @app.get("/api/indexes")
    async def list_indexes() -> dict[str, Any]:
        """The on-disk image indexes this server searches."""
        return {"indexes": [shown(ix) for ix in await run_in_threadpool(store.index_summaries)]}

    @app.get("/api/index-search")
    async def index_search(index: str, q: str = Query(..., max_length=MAX_QUERY_CHARS),
                           k: int = Query(10, ge=1, le=MAX_K)) -> dict[str, Any]:
        """Top ``k`` images of an on-disk index for a sentence ``q``, by exact streamed search."""
        job = store.shelf.ready(index)
        if job is not None:
            await asyncio.wrap_future(job)
        out = await run_in_threadpool(store.search_index, index, q, k)
        for item in out["results"]:
            item["image_url"] = f"/api/index-image?index={quote(index, safe='')}&image={item['image']}"
        return out

    @app.get("/api/index-image")
    async def index_image(index: str, image: int = Query(..., ge=0)) -> Response:
        """Image ``image`` of an index: its file when it lies under the image root, or a placeholder naming it."""
        path = await run_in_threadpool(store.index_image_file, index, image)
        if path is None:
            return Response(placeholder_svg(f"{index} #{image}"), media_type="image/svg+xml")
        return FileResponse(path)

    @app.get("/api/image")
    async def image(run: str, split: str, index: int = Query(..., ge=0)) -> Response:
        """Image ``index`` of a split: its file from under the image root, or a placeholder naming it."""
        path = await after(store.prepare_split, store.image_file, run, split, index)
        if path is None:
            return Response(placeholder_svg(f"{split} #{index}"), media_type="image/svg+xml")
        return FileResponse(path)

    @app.get("/images/{path:path}", include_in_schema=False)
    async def image_by_path(path: str) -> FileResponse:
        """A file under the configured image root; anything that resolves outside it is not found."""
        if store.image_root is None:
            raise NotFound("no image root configured (start the server with --images)")
        found = await run_in_threadpool(safe_path, store.image_root, path)
        if found is None:
            raise NotFound(f"no image {path!r} under the image root")
        return FileResponse(found)

    return app
