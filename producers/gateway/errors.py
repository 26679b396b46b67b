"""Pipeline error codes -> HTTP statuses (one table), and the gateway's own errors.

A FAILED result keeps the code the worker gave it (``OcrResult.error_code``) and answers
with the status of the table; the gateway refuses what it can see is wrong before
publishing with the code the worker would have given it (a scan over the cap is
``DOCUMENT_TOO_LARGE`` either way). Codes only the gateway gives are listed after the
pipeline's. A code the table does not know is a 500.
"""

from __future__ import annotations

from collections.abc import Mapping

HTTP_STATUS: Mapping[str, int] = {
    # the request itself is wrong
    "INVALID_REQUEST": 400,
    "UNDECODABLE_RECORD": 400,
    "EMPTY_DOCUMENT": 400,
    "IMAGE_URI": 400,
    # over a limit: send less
    "DOCUMENT_TOO_LARGE": 413,
    "TOO_MANY_PAGES": 413,
    "PIXEL_LIMIT": 413,
    "UNSUPPORTED_FORMAT": 415,
    # a well-formed request whose document cannot be read
    "UNREADABLE_IMAGE": 422,
    "UNREADABLE_DOCUMENT": 422,
    "PDF_ENCRYPTED": 422,
    "UNSUPPORTED_TRANSFER_SYNTAX": 422,
    "NO_IMAGE_DATA": 422,
    "NO_TEXT_LAYER": 422,
    "DECODE_TIMEOUT": 422,
    "PAGE_FAILED": 422,
    # the pipeline's fault
    "RESULT_TOO_LARGE": 500,
    "INTERNAL_ERROR": 500,
    # the gateway's own
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "REQUEST_ID_CONFLICT": 409,
    "TOO_MANY_WAITS": 429,
    "UNAVAILABLE": 503,
    "RESULT_TIMEOUT": 504,
}


def status_for(code: str | None) -> int:
    """The HTTP status of an error code (500 for one the table does not know)."""
    return HTTP_STATUS.get(code or "", 500)


class GatewayError(Exception):
    """An answer other than a result: its code, HTTP status and sentence."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status_for(code)
        self.request_id = request_id
        self.headers = dict(headers or {})

    def for_request(self, request_id: str) -> GatewayError:
        """The same error, naming the request it answers."""
        return GatewayError(
            self.code, self.message, request_id=request_id, headers=self.headers
        )

    def ocr_body(self) -> dict[str, object]:
        """The body ``/v1/ocr`` answers with."""
        return {
            "request_id": self.request_id,
            "error_code": self.code,
            "detail": self.message,
        }

    def openai_body(self) -> dict[str, object]:
        """The body ``/v1/chat/completions`` answers with (OpenAI's error shape)."""
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error"
                if self.status < 500
                else "server_error",
                "code": self.code,
                "param": None,
                "request_id": self.request_id,
            }
        }


def invalid(message: str) -> GatewayError:
    return GatewayError("INVALID_REQUEST", message)
