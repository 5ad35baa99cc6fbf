import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { HttpError } from "../../../client/http.js";
import { jsonError, renderCsv, renderTable } from "../../../cli/output.js";

describe("cli output", () => {
  test("CSV is RFC 4180: CRLF records, quoted fields with comma, quote or line break, quotes doubled", () => {
    assert.equal(
      renderCsv([
        ["a", "b,c"],
        ['say "hi"', "two\nlines"],
      ]),
      'a,"b,c"\r\n"say ""hi""","two\nlines"\r\n',
    );
    assert.equal(renderCsv([]), "");
  });

  test("the table: a rule between rows, columns as wide as their widest cell", () => {
    assert.equal(
      renderTable(["A", "BB"], [["xyz", ""]]),
      ["+-----+----+", "| A   | BB |", "+-----+----+", "| xyz |    |", "+-----+----+", ""].join("\n"),
    );
  });

  test("the error object: message, and the server's code and status when one answered", () => {
    assert.deepEqual(jsonError(new Error("x"), "said"), { error: { message: "said" } });
    assert.deepEqual(jsonError(new HttpError(404, "NOT_FOUND", "gone"), "said"), {
      error: { message: "said", code: "NOT_FOUND", status: 404 },
    });
  });
});
