"""Finding Landsat and MODIS items: a local static STAC catalog or a STAC API.

A *source* is one of:

- a path to a static STAC catalog (``catalog.json``, or the folder holding it), searched
  in-process without a server (this is how ``sample_scenes/`` is used);
- a provider name from :data:`stfuse.data.sensors.PROVIDERS` (``planetary-computer``,
  ``earth-search``);
- any STAC API URL (``http(s)://...``), searched with pystac-client.

Searches take a bbox in lon/lat (or a GeoJSON geometry) and an inclusive date range, and
return items per collection sorted by time. STAC API requests have a timeout and are
retried with exponential backoff on 5xx/429/connection errors (urllib3 ``Retry``), honouring
a server's ``Retry-After`` up to :attr:`RetryPolicy.max_retry_after` seconds.

Signed asset URLs (Planetary Computer SAS tokens) come from a *signer* named by the provider
(:data:`SIGNERS`): ``signer(href, fresh=False) -> signed href``. Items are signed when found;
when a read is refused (HTTP 403, e.g. an expired token) the reader asks the same signer for a
fresh signature once (``fresh=True``) and retries (see :mod:`stfuse.data.cube`). Tokens never
appear in messages: :func:`redact` strips query strings.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import pystac
from pystac_client import Client
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import box, mapping, shape
from shapely.ops import unary_union
from urllib3.util.retry import Retry

from stfuse.data.sensors import ALIASES, PROVIDERS, provider_id
from stfuse.errors import EmptySearchError, InputError, MissingFileError, RemoteServiceError
from stfuse.sim.sample import ensure_sample_catalog

Bbox = tuple[float, float, float, float]
"""(min lon, min lat, max lon, max lat) in degrees, EPSG:4326."""

DEFAULT_SAMPLE = Path(__file__).resolve().parents[2] / "sample_scenes" / "catalog.json"
"""The generated sample catalog committed in the source tree (absent from an installed wheel:
``catalog=None`` opens :func:`default_catalog`)."""


def default_catalog() -> Path:
    """The sample ``catalog.json`` that ``catalog=None`` means: ``$STFUSE_SAMPLE_DIR``, else the
    checkout's ``sample_scenes/``, else ``~/.cache/stfuse/sample_scenes``, generated there on
    first use (:func:`stfuse.sim.sample.ensure_sample_catalog`, about 20 s, same scenes)."""
    return ensure_sample_catalog()


@dataclass(frozen=True)
class SearchQuery:
    """What to search: where (``bbox`` or ``aoi`` GeoJSON geometry) and when (inclusive dates)."""

    start: dt.date | None = None
    end: dt.date | None = None
    bbox: Bbox | None = None
    aoi: dict[str, Any] | None = None
    max_cloud: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def datetime_range(self) -> str | None:
        """STAC datetime interval string, e.g. ``2023-06-01/2023-07-31`` (open ends as ``..``)."""
        if self.start is None and self.end is None:
            return None
        start = self.start.isoformat() if self.start else ".."
        end = f"{self.end.isoformat()}T23:59:59Z" if self.end else ".."
        return f"{start}/{end}"


def parse_date(text: str | dt.date, *, name: str = "date") -> dt.date:
    """Strict ISO 8601 date (``YYYY-MM-DD``); :class:`InputError` otherwise."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(text)):
            raise ValueError(text)
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"{name} {text!r} is not an ISO 8601 date; write it as YYYY-MM-DD") from None


def check_bbox(bbox: Sequence[float]) -> Bbox:
    """Validate a lon/lat bbox ``(minx, miny, maxx, maxy)``."""
    if len(bbox) != 4:
        raise InputError(f"bbox needs 4 numbers (min lon, min lat, max lon, max lat), got {len(bbox)}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InputError(f"bbox {bbox} is not within lon -180..180, lat -90..90; give it in degrees (EPSG:4326)")
    if minx >= maxx or miny >= maxy:
        raise InputError(f"bbox {bbox} is empty or reversed; order is min lon, min lat, max lon, max lat")
    return (minx, miny, maxx, maxy)


def read_aoi(path: str | Path) -> dict[str, Any]:
    """The union geometry (GeoJSON dict, lon/lat) of a GeoJSON file (Feature/FeatureCollection/Geometry)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"AOI file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"AOI file {path} is not valid GeoJSON: {err}") from None
    if doc.get("type") == "FeatureCollection":
        geoms = [f["geometry"] for f in doc.get("features", []) if f.get("geometry")]
    elif doc.get("type") == "Feature":
        geoms = [doc["geometry"]]
    else:
        geoms = [doc]
    if not geoms:
        raise InputError(f"AOI file {path} contains no geometry")
    try:
        return mapping(unary_union([shape(g) for g in geoms]))
    except Exception as err:  # shapely raises several types for bad geometry
        raise InputError(f"AOI file {path} has an invalid geometry: {err}") from None


def _query_geometry(query: SearchQuery):
    if query.aoi is not None:
        return shape(query.aoi)
    if query.bbox is not None:
        return box(*query.bbox)
    return None


def is_remote(source: str | Path | None) -> bool:
    """True if ``source`` names a STAC API (provider name or URL) rather than a local catalog."""
    if source is None:
        return False
    text = str(source)
    return text in PROVIDERS or text.startswith(("http://", "https://"))


def open_static_catalog(source: str | Path | None) -> pystac.Catalog:
    """Open a static catalog from a path to ``catalog.json`` or its folder (default: sample_scenes)."""
    path = Path(source) if source is not None else default_catalog()
    if path.is_dir():
        path = path / "catalog.json"
    if not path.exists():
        raise MissingFileError(f"catalog not found: {path}; give a catalog.json path, a folder, or a STAC API URL")
    try:
        return pystac.Catalog.from_file(str(path))
    except (json.JSONDecodeError, pystac.STACError, KeyError) as err:
        raise InputError(f"{path} is not a valid STAC catalog: {err}") from None


def item_time(item: pystac.Item) -> dt.datetime:
    """The item's ``datetime``, else its ``start_datetime`` (STAC allows a null datetime for
    intervals, as MODIS items on Planetary Computer use); :class:`InputError` if neither."""
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InputError(f"item {item.id} has neither datetime nor start_datetime; it cannot be placed in time")
    return when


def _in_query(item: pystac.Item, query: SearchQuery, geometry) -> bool:
    # Like a STAC API: the item's [start_datetime, end_datetime] interval (else its datetime)
    # must intersect the query's days (MCD43A4 items span their 16-day retrieval window).
    first = item.common_metadata.start_datetime or item.datetime
    last = item.common_metadata.end_datetime or item.datetime
    if first is None or last is None:
        return False
    if query.start and last.date() < query.start:
        return False
    if query.end and first.date() > query.end:
        return False
    if geometry is not None and item.geometry is not None and not shape(item.geometry).intersects(geometry):
        return False
    cloud = item.properties.get("eo:cloud_cover")
    if query.max_cloud is not None and cloud is not None and cloud > query.max_cloud and item.collection_id and _is_fine(item.collection_id):
        return False
    return True


def _is_fine(collection_id: str) -> bool:
    """True for a fine collection of the sensor table (any provider's id): ``--max-cloud`` applies to it."""
    from stfuse.data.sensors import COLLECTIONS

    meta = COLLECTIONS.get(ALIASES.get(collection_id, collection_id))
    return meta.resolution == "fine" if meta else "landsat" in collection_id


def search_static(catalog: pystac.Catalog, query: SearchQuery, collections: Iterable[str]) -> dict[str, list[pystac.Item]]:
    """Items of ``collections`` in a static catalog matching ``query``, sorted by datetime."""
    wanted = set(collections)
    geometry = _query_geometry(query)
    found: dict[str, list[pystac.Item]] = {c: [] for c in wanted}
    for item in catalog.get_items(recursive=True):
        cid = item.collection_id if item.collection_id in wanted else ALIASES.get(str(item.collection_id))
        if cid in wanted and _in_query(item, query, geometry):
            found[cid].append(item)
    for items in found.values():
        items.sort(key=lambda i: (item_time(i), i.id))
    return found


@dataclass
class RetryPolicy:
    """HTTP policy for STAC API requests: per-request ``timeout`` (s), ``retries`` on
    429/5xx/connection errors with exponential ``backoff`` (s x 2^n); a ``Retry-After``
    header is honoured but never waited on longer than ``max_retry_after`` (s)."""

    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5
    max_retry_after: float = 60.0


RETRY = RetryPolicy()
"""The policy in force (tests shorten it)."""


def open_api(source: str, *, policy: RetryPolicy | None = None):
    """A pystac-client ``Client`` for a provider name or URL, with timeout and retry policy."""
    policy = policy or RETRY
    timeout, retries, backoff = policy.timeout, policy.retries, policy.backoff

    provider = PROVIDERS.get(source)
    url = str(provider["url"]) if provider else source
    capped = type("CappedRetry", (_CappedRetry,), {"max_retry_after": policy.max_retry_after})
    retry = capped(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # retry POST searches too
        raise_on_status=False,
    )
    signer = signer_for(source)
    modifier = _signing_modifier(signer) if signer is not None else None
    try:
        stac_io = StacApiIO(timeout=timeout, max_retries=retry)
        return Client.open(url, stac_io=stac_io, modifier=modifier, timeout=timeout)  # open() re-applies timeout
    except Exception as err:
        raise RemoteServiceError(f"could not open STAC API {redact(url)}: {_describe(err, policy)}") from None


def search_api(client, query: SearchQuery, collections: Iterable[str], *, max_items: int | None = 5000) -> dict[str, list[pystac.Item]]:
    """Items per collection from a STAC API (pystac-client, paged), sorted by datetime."""
    found: dict[str, list[pystac.Item]] = {}
    for collection_id in collections:
        params: dict[str, Any] = dict(collections=[collection_id], datetime=query.datetime_range(), max_items=max_items)
        if query.aoi is not None:
            params["intersects"] = query.aoi
        elif query.bbox is not None:
            params["bbox"] = list(query.bbox)
        if query.max_cloud is not None and _is_fine(collection_id):
            params["query"] = {"eo:cloud_cover": {"lte": query.max_cloud}}
        try:
            items = list(client.search(**params).items())
        except Exception as err:
            raise RemoteServiceError(
                f"STAC search of {collection_id!r} at {redact(str(client.self_href))} failed: {_describe(err, RETRY)}"
            ) from None
        items.sort(key=lambda i: (item_time(i), i.id))
        found[collection_id] = items
    return found


class _CappedRetry(Retry):
    """urllib3 ``Retry`` that waits at most ``max_retry_after`` s for a ``Retry-After``."""

    max_retry_after: float = 60.0

    def get_retry_after(self, response) -> float | None:  # type: ignore[override]
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, self.max_retry_after)


def _describe(err: Exception, policy: RetryPolicy) -> str:
    """A one-line reason for a failed STAC request, with what was tried."""
    text = redact(str(err))
    tries = policy.retries + 1
    status = getattr(err, "status_code", None)  # pystac_client.exceptions.APIError
    if not status:
        match = re.search(r"too many (\d{3}) error responses|(\d{3}) (?:Server|Client) Error", text)
        status = (match.group(1) or match.group(2)) if match else None
    if str(status) == "429":
        return (f"the server answered HTTP 429 Too Many Requests ({tries} tries, waiting as its Retry-After asked, "
                f"at most {policy.max_retry_after:g} s each); the service is rate limiting, try again later")
    if status:
        return f"the server answered HTTP {status} ({tries} tries); try again later or check the URL"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"timed out after {policy.timeout:g} s per request ({tries} tries); the server is slow or unreachable, try again later"
    if "Connection refused" in text or "Failed to establish" in text:
        return f"connection refused ({tries} tries); is the URL right and the server up?"
    return text


def search(source: str | Path | None, query: SearchQuery, collections: Iterable[str]) -> dict[str, list[pystac.Item]]:
    """Search a local catalog or STAC API; items per collection, sorted by time."""
    collections = list(collections)
    if is_remote(source):
        if str(source) in PROVIDERS:  # the provider's own ids (CMR-STAC: HLSL30_2.0)
            ids = {c: [provider_id(source, c)] for c in collections}
        else:  # any STAC API: stfuse's id, then the product's other known ids (stactools-viirs: viirs-43ia4-001)
            ids = {c: [c, *(v for v, k in ALIASES.items() if k == c)] for c in collections}
        client = open_api(str(source))
        found = search_api(client, query, [i for c in collections for i in ids[c]])
        merged = {c: sorted((it for i in ids[c] for it in found.get(i, [])), key=lambda it: (item_time(it), it.id)) for c in collections}
        return merged
    return search_static(open_static_catalog(source), query, collections)


def describe_dates(start: dt.date | None, end: dt.date | None) -> str:
    """Words for an inclusive date range with open ends: ``between A and B``, ``from A on``,
    ``up to B``, ``at any date``."""
    if start and end:
        return f"between {start} and {end}"
    if start:
        return f"from {start} on"
    if end:
        return f"up to {end}"
    return "at any date"


def _describe_area(query: SearchQuery) -> str:
    if query.bbox is not None:
        return f"for bbox {list(query.bbox)}"
    if query.aoi is not None:
        return f"for the AOI (lon/lat bounds {[round(v, 4) for v in shape(query.aoi).bounds]})"
    return "anywhere"


def _extent_text(what: str, first: dt.date | None, last: dt.date | None, bounds: Sequence[float] | None) -> str:
    when = f"{first or 'an open start'} to {last or 'an open end'}"
    where = f", lon/lat bbox {[round(float(v), 4) for v in bounds]}" if bounds is not None else ""
    return f"{what} span {when}{where}"


def _static_holdings(source: str | Path | None, collection_id: str) -> str:
    """What a static catalog holds of ``collection_id``: its items' date range and their bbox union,
    or the collections it does hold when it has none."""
    items = list(open_static_catalog(source).get_items(recursive=True))
    mine = [i for i in items if i.collection_id == collection_id]
    if not mine:
        held = sorted({str(i.collection_id) for i in items if i.collection_id})
        return f"it holds no {collection_id} items at all, only {', '.join(held) or 'no items'}"
    days = [item_time(i).date() for i in mine]
    boxes = np.array([i.bbox for i in mine if i.bbox], dtype=np.float64)
    bounds = (*boxes[:, :2].min(axis=0), *boxes[:, 2:4].max(axis=0)) if boxes.size else None
    return _extent_text(f"its {len(mine)} {collection_id} items", min(days), max(days), bounds)


def _api_holdings(source: str, collection_id: str) -> str:
    """The collection's extent as the STAC API declares it (one quick request, no retries)."""
    collection = open_api(source, policy=RetryPolicy(timeout=10.0, retries=0)).get_collection(collection_id)
    spatial, temporal = collection.extent.spatial.bboxes, collection.extent.temporal.intervals
    first, last = (temporal[0] if temporal else (None, None))
    return _extent_text(f"its {collection_id} collection's items", first.date() if first else None,
                        last.date() if last else None, spatial[0] if spatial else None)


def catalog_holdings(source: str | Path | None, collection_id: str) -> str:
    """One clause saying what ``source`` holds of ``collection_id`` (dates and area), for messages
    about empty searches; empty when it cannot be told cheaply (an API without the collection's
    extent, a network error: the message is then only about what was searched)."""
    try:
        return _api_holdings(str(source), collection_id) if is_remote(source) else _static_holdings(source, collection_id)
    except Exception:  # best effort: never hide the empty-search message behind another error
        return ""


def require_items(found: dict[str, list[pystac.Item]], collection_id: str, source: Any, query: SearchQuery, *, searched: SearchQuery | None = None) -> list[pystac.Item]:
    """The items of ``collection_id``; :class:`EmptySearchError` if none, saying what was searched
    (real dates: open ends as "at any date", "from A on") and what the catalog holds of the
    collection (:func:`catalog_holdings`: for a static catalog its items' dates and bbox, for an
    API the collection's declared extent), so the user knows what to ask instead.

    ``query`` is what the user asked; ``searched`` the (wider) query actually sent, if any.
    """
    items = found.get(collection_id) or []
    if not items:
        wider = ""
        if searched is not None and (searched.start, searched.end) != (query.start, query.end):
            wider = f" (pairs searched {describe_dates(searched.start, searched.end)})"
        holdings = catalog_holdings(source, collection_id)
        absent = "items at all" in holdings
        advice = ("use a catalog that has them" if absent else
                  "ask for dates and an area inside that" if holdings else "widen the dates or the area")
        raise EmptySearchError(
            f"no {collection_id} items in {source or 'sample_scenes'} {_describe_area(query)} "
            f"{describe_dates(query.start, query.end)}{wider}; " + (f"{holdings}; " if holdings else "") + advice
        )
    return items


class Signer(Protocol):
    """Signs an asset href: ``signer(href)`` adds a token unless the href already has one;
    ``signer(href, fresh=True)`` drops any token (and cached tokens) and signs anew."""

    def __call__(self, href: str, *, fresh: bool = False) -> str: ...


def strip_query(href: str) -> str:
    """``href`` without its query string (where signed URLs keep their token)."""
    return href.split("?", 1)[0]


def planetary_computer_signer(href: str, *, fresh: bool = False) -> str:
    """Sign a Planetary Computer blob href with a SAS token (package ``planetary-computer``).

    ``fresh``: forget the token on the href and the package's token cache first (the server
    said the token expired), then sign again.
    """
    import planetary_computer

    if fresh:
        from planetary_computer import sas

        sas.TOKEN_CACHE.clear()
        href = strip_query(href)
    return planetary_computer.sign_url(href)


EARTHDATA_HOST = "urs.earthdata.nasa.gov"
"""The ``~/.netrc`` machine whose login NASA Earthdata (LP DAAC) downloads accept."""
EARTHDATA_DATA_HOSTS = ("earthdata.nasa.gov", "earthdatacloud.nasa.gov")
"""Hosts of assets that need Earthdata credentials (``data.lpdaac.earthdatacloud.nasa.gov``)."""


def earthdata_credentials() -> dict[str, str]:
    """GDAL settings that authenticate reads of NASA Earthdata assets: a bearer token from
    ``$EARTHDATA_TOKEN``, else ``~/.netrc`` (``$NETRC``) with machine ``urs.earthdata.nasa.gov``
    (GDAL follows the login redirect with it, keeping cookies in a temporary file).
    :class:`InputError` (exit 2) when neither is there. The token never appears in a message."""
    import netrc
    import os
    import tempfile

    token = os.environ.get("EARTHDATA_TOKEN", "").strip()
    if token:
        return {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(EARTHDATA_HOST) if path.exists() else None
    except (netrc.NetrcParseError, OSError):
        entry = None
    if entry:
        cookies = str(Path(tempfile.gettempdir()) / "stfuse-earthdata-cookies.txt")
        return {"GDAL_HTTP_NETRC": "YES", "GDAL_HTTP_NETRC_FILE": str(path), "GDAL_HTTP_COOKIEFILE": cookies,
                "GDAL_HTTP_COOKIEJAR": cookies}
    raise InputError(
        "NASA Earthdata assets (LP DAAC: HLS, VIIRS) need a login: set EARTHDATA_TOKEN to a token from "
        f"https://urs.earthdata.nasa.gov (Generate Token), or add 'machine {EARTHDATA_HOST} login USER password PASS' "
        f"to {path}"
    )


def earthdata_signer(href: str, *, fresh: bool = False) -> str:
    """Earthdata assets are read with credentials in GDAL's settings, not in the URL: checks they
    exist (:func:`earthdata_credentials`) and returns ``href`` unchanged."""
    earthdata_credentials()
    return href


def needs_earthdata(hrefs: Iterable[str]) -> bool:
    """True if any of ``hrefs`` is a NASA Earthdata (LP DAAC) asset."""
    return any(re.match(r"https?://[^/]*(" + "|".join(map(re.escape, EARTHDATA_DATA_HOSTS)) + r")(/|$)", h) for h in hrefs)


SIGNERS: dict[str, Signer] = {"planetary_computer": planetary_computer_signer, "earthdata": earthdata_signer}
"""Signers by the name a provider gives in ``PROVIDERS[...]["sign"]``; tests add fakes here."""


def signer_for(source: str | Path | None) -> Signer | None:
    """The signer of provider ``source`` (None for URLs, paths and unsigned providers)."""
    provider = PROVIDERS.get(str(source)) if source is not None else None
    name = provider.get("sign") if provider else None
    if not name:
        return None
    if name == "planetary_computer":
        try:
            import planetary_computer  # noqa: F401
        except ImportError:
            raise InputError(
                "the planetary-computer provider needs the `planetary-computer` package: pip install 'stfuse[planetary-computer]'"
            ) from None
    try:
        return SIGNERS[str(name)]
    except KeyError:
        raise InputError(f"provider {source!r} asks for signer {name!r}, which stfuse does not know") from None


def sign_item(item: pystac.Item, signer: Signer) -> pystac.Item:
    """Sign every asset href of ``item`` in place (hrefs already signed are kept); returns it."""
    for asset in item.assets.values():
        asset.href = signer(asset.href)
    return item


def _signing_modifier(signer: Signer) -> Callable[[Any], None]:
    """A pystac-client ``modifier`` that signs items (objects or dicts) in place."""

    def modify(obj: Any) -> None:
        if isinstance(obj, pystac.Item):
            sign_item(obj, signer)
        elif isinstance(obj, pystac.ItemCollection):
            for item in obj:
                sign_item(item, signer)
        elif isinstance(obj, dict):
            for feature in obj.get("features", [obj]):
                for asset in (feature.get("assets") or {}).values():
                    if isinstance(asset, dict) and "href" in asset:
                        asset["href"] = signer(asset["href"])

    return modify


def redact(text: str) -> str:
    """Strip query strings (signed-URL tokens such as SAS ``sig=``) from URLs in ``text``."""
    return re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", r"\1?<redacted>", text)


def query_collections(catalog: str | Path | None, coarse_collection: str | None = None, fine_collection: str | None = None, *,
                      start: dt.date | None = None, end: dt.date | None = None, bands: Sequence[str] | None = None) -> list[str]:
    """The fine and coarse collection ids a query of ``catalog`` searches: ``fine_collection``, else
    the provider's fine one, else ``landsat-c2-l2``; ``coarse_collection``, else by date
    (:func:`stfuse.data.sensors.default_coarse`: MCD43A4 up to the end of MODIS, VIIRS NBAR after; a
    provider's own coarse default before that)."""
    from stfuse.data.sensors import BANDS, MODIS_END, default_coarse

    provider = PROVIDERS.get(str(catalog)) if catalog else None
    fine = fine_collection or (provider or {}).get("fine", "landsat-c2-l2")
    by_date = default_coarse(start, end, bands or BANDS)
    after_modis = (end or start) is not None and (end or start) > MODIS_END
    coarse = coarse_collection or (by_date if after_modis or not provider else (provider or {}).get("coarse"))
    return [str(c) for c in (fine, coarse) if c]


def item_rows(found: dict[str, list[pystac.Item]]) -> list[dict[str, Any]]:
    """One row per item found (``date``, ``collection``, ``sensor``, ``platform``, ``cloud_cover``,
    ``id``), sorted by date, collection and id: what ``stfuse search`` lists."""
    from stfuse.data.sensors import COLLECTIONS

    rows = []
    for collection_id, items in found.items():
        meta = COLLECTIONS.get(ALIASES.get(collection_id, collection_id))
        for item in items:
            platform = str(item.properties.get("platform", ""))
            rows.append({
                "date": item.datetime.date().isoformat() if item.datetime else "",
                "collection": collection_id,
                "sensor": (meta.sensor_by_platform.get(platform.lower(), "") if meta else ""),
                "platform": platform,
                "cloud_cover": item.properties.get("eo:cloud_cover"),
                "id": item.id,
            })
    return sorted(rows, key=lambda r: (r["date"], r["collection"], r["id"]))
