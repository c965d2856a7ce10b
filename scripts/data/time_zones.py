#!/usr/bin/env python3
"""Writes crates/core/data/nanp.tsv and crates/core/data/countries.tsv, the tables smsgate derives a recipient's
time zone from when the contact names none.

Sources: libphonenumber's geocoding and time zone data (Apache-2.0), through the `phonenumbers` package on PyPI,
for the NANP area codes; the tz database's zone.tab (public domain) for each country's zones. Where a country or an
area code spans several zones, the most populous is chosen by hand below, and the row says `several`.

Run: python3 -m venv /tmp/pn && /tmp/pn/bin/pip install phonenumbers && /tmp/pn/bin/python scripts/data/time_zones.py
"""

import os
import sys

import phonenumbers
from phonenumbers.geodata import GEOCODE_DATA
from phonenumbers.tzdata import TIMEZONE_DATA

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "core", "data")

US = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA", "Colorado": "CO",
    "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID",
    "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA",
    "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS",
    "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ",
    "New Mexico": "NM", "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH",
    "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA",
    "Washington": "WA", "Washington D.C.": "DC", "Washington DC": "DC", "West Virginia": "WV", "Wisconsin": "WI",
    "Wyoming": "WY", "Washington State": "WA",
}
CA = {
    "Alberta": "AB", "British Columbia": "BC", "Manitoba": "MB", "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL", "Newfoundland": "NL", "Nova Scotia": "NS", "Ontario": "ON",
    "Prince Edward Island": "PE", "Quebec": "QC", "Saskatchewan": "SK", "Northwest Territories": "NT",
    "Nunavut": "NU", "Yukon": "YT", "Nova Scotia/Prince Edward Island": "NS",
    "Yukon/Northwest Territories/Nunavut": "YT", "British Colombia": "BC",
    "Northwest Territories/Nunavut/Yukon": "YT",
}
# Area codes whose libphonenumber data names several zones: the most populous part's zone.
NANP_CHOICE = {
    "208": "America/Boise",        # Idaho: Boise and the south are Mountain; the panhandle is Pacific.
    "605": "America/Chicago",      # South Dakota: Sioux Falls and the east are Central.
    "701": "America/Chicago",      # North Dakota: Fargo and Bismarck are Central.
    "709": "America/St_Johns",     # Newfoundland and Labrador: most live on the island.
    "775": "America/Los_Angeles",  # Nevada outside Las Vegas: Reno.
    "879": "America/St_Johns",
    "907": "America/Anchorage",
    "986": "America/Boise",
}
# Countries with several zones in zone.tab: the most populous one's.
COUNTRY_CHOICE = {
    "AR": "America/Argentina/Buenos_Aires", "AU": "Australia/Sydney", "BR": "America/Sao_Paulo",
    "CA": "America/Toronto", "CD": "Africa/Kinshasa", "CL": "America/Santiago", "CN": "Asia/Shanghai",
    "CY": "Asia/Nicosia", "DE": "Europe/Berlin", "EC": "America/Guayaquil", "ES": "Europe/Madrid",
    "FM": "Pacific/Chuuk", "GL": "America/Nuuk", "ID": "Asia/Jakarta", "KI": "Pacific/Tarawa",
    "KZ": "Asia/Almaty", "MH": "Pacific/Majuro", "MN": "Asia/Ulaanbaatar", "MX": "America/Mexico_City",
    "MY": "Asia/Kuala_Lumpur", "NZ": "Pacific/Auckland", "PF": "Pacific/Tahiti", "PG": "Pacific/Port_Moresby",
    "PS": "Asia/Hebron", "PT": "Europe/Lisbon", "RU": "Europe/Moscow", "UA": "Europe/Kyiv", "UM": "Pacific/Wake",
    "US": "America/New_York", "UZ": "Asia/Tashkent", "AQ": "Antarctica/McMurdo", "ES": "Europe/Madrid",
    "EC": "America/Guayaquil", "UY": "America/Montevideo",
}


def by_prefix():
    """Places by area code; where the area code itself has none, by its longer prefixes (most named first)."""
    longer = {}
    for key, names in GEOCODE_DATA.items():
        if key.startswith("1") and len(key) > 4 and "en" in names:
            longer.setdefault(key[:4], []).append(names["en"])
    return longer


def subdivision_of(place, names):
    name = place.split(",")[0].strip()
    if name in names:
        return names[name]
    if ", " in place:
        return place.rsplit(", ", 1)[1]
    return ""


def nanp():
    longer = by_prefix()
    rows = []
    for npa in range(200, 1000):
        prefix = f"1{npa}"
        zones = TIMEZONE_DATA.get(prefix)
        if not zones:
            # Some area codes (310, 208) are listed only by longer prefixes: their zones together.
            zones = sorted({z for key, zs in TIMEZONE_DATA.items() if key.startswith(prefix) for z in zs})
        if not zones:
            continue
        number = phonenumbers.parse(f"+1{npa}2345678")
        region = phonenumbers.region_code_for_number(number) or "US"
        names = {"US": US, "CA": CA}.get(region)
        subdivision = ""
        if names is not None:
            place = GEOCODE_DATA.get(prefix, {}).get("en")
            places = [place] if place else longer.get(prefix, [])
            found = [subdivision_of(p, names) for p in places]
            found = [f for f in found if f]
            if found:
                subdivision = max(set(found), key=found.count)
        if len(zones) > 1:
            zone, how = NANP_CHOICE[str(npa)], "several"
        else:
            zone, how = zones[0], "one"
        rows.append((str(npa), region, subdivision, zone, how))
    return rows


def countries():
    zones = {}
    with open("/usr/share/zoneinfo/zone.tab") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            cc, _, tz = line.split("\t")[:3]
            zones.setdefault(cc, []).append(tz.strip())
    rows = []
    for cc in sorted(zones):
        if len(zones[cc]) == 1:
            rows.append((cc, zones[cc][0], "one"))
        elif cc in COUNTRY_CHOICE:
            rows.append((cc, COUNTRY_CHOICE[cc], "several"))
        else:
            sys.exit(f"{cc} has several zones {zones[cc]}: choose the most populous in COUNTRY_CHOICE")
    return rows


def write(name, header, rows):
    with open(os.path.join(OUT, name), "w") as f:
        f.write(header)
        for row in rows:
            f.write("\t".join(row) + "\n")


HEAD = "# Written by scripts/data/time_zones.py from {src}; do not edit by hand.\n# {cols}\n"
write("nanp.tsv", HEAD.format(src=f"libphonenumber {phonenumbers.__version__} (Apache-2.0)",
      cols="area code\tregion\tstate or province\tzone\tzones the area code spans ('several': the most populous chosen)"),
      nanp())
write("countries.tsv", HEAD.format(src="the tz database's zone.tab (public domain)",
      cols="country\tzone\tzones the country has ('several': the most populous chosen)"), countries())
