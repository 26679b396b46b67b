"""Which files of a folder the publisher sends: scans by suffix, and files without a
suffix (PACS exports) by what their first bytes are."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from producers.publisher import RequestOptions, build_request, find_scans
from tests.support.dicoms import secondary_capture
from tests.support.scans import encode


def test_suffixless_files_are_scans_when_their_head_is_one(tmp_path: Path) -> None:
    page = Image.new("L", (8, 8), 255)
    series = tmp_path / "PT000000" / "ST000000"
    series.mkdir(parents=True)
    (series / "IM000001").write_bytes(secondary_capture([page]))
    (series / "IM000002").write_bytes(encode(page, "PNG"))  # any supported format
    (series / "NOTES").write_text("not a scan")
    (series / "EMPTY").write_bytes(b"")
    (series / ".hidden").write_bytes(secondary_capture([page]))  # a dot file is none
    (tmp_path / "a.png").write_bytes(encode(page, "PNG"))
    (tmp_path / "b.dat").write_bytes(
        secondary_capture([page])
    )  # another suffix: unread

    found = find_scans([tmp_path])

    assert found == [series / "IM000001", series / "IM000002", tmp_path / "a.png"]
    request = build_request(series / "IM000001", RequestOptions(by_reference=True))
    assert request.content_type == "application/dicom"
    assert request.document_id == "IM000001"


def test_a_file_named_on_the_command_line_is_taken_as_it_is(tmp_path: Path) -> None:
    scan = tmp_path / "IM000001"
    scan.write_bytes(b"whatever it is")
    assert find_scans([scan]) == [scan]
