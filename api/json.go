package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
)

// maxBodyBytes is the largest request body accepted, 1 MiB. The API's
// bodies are a few hundred bytes, so anything larger is a client mistake.
const maxBodyBytes = 1 << 20

// writeJSON sends body with the status. The Content-Length is always set
// because the Go SDK decodes a success body only when the length is not 0
// and the Content-Type starts with application/json.
func writeJSON(w http.ResponseWriter, status int, body any) {
	raw, err := json.Marshal(body)
	if err != nil {
		// Every body is a fixed struct of strings, numbers and booleans,
		// so this is a programming error.
		raw = []byte(`{"message":"internal error: could not encode the response","type":"internal_error"}`)
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

// decodeBody decodes the request's JSON object into dst. An empty body
// leaves dst unchanged, so a missing field is reported as required rather
// than as a malformed body. Unknown fields are ignored, as newer SDKs send
// fields that this API does not know yet. Every failure is an *apiError
// naming the field when the JSON decoder reports one.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) error {
	if contentType := r.Header.Get("Content-Type"); contentType != "" {
		mediaType, _, err := mime.ParseMediaType(contentType)
		if err != nil || mediaType != "application/json" {
			return genericError(http.StatusUnsupportedMediaType, "unsupported_media_type",
				fmt.Sprintf("Content-Type %q is not supported: send the body as application/json", contentType))
		}
	}

	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	decoder := json.NewDecoder(body)
	if err := decoder.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return bodyError(err)
	}
	// A second value, or anything but white space after the object, is
	// malformed rather than silently ignored.
	if _, err := decoder.Token(); !errors.Is(err, io.EOF) {
		if err == nil || isSyntaxError(err) {
			return invalidArgument("body", reasonFormat, "the body must contain exactly one JSON object")
		}
		return bodyError(err)
	}
	return nil
}

func isSyntaxError(err error) bool {
	var syntaxErr *json.SyntaxError
	return errors.As(err, &syntaxErr)
}

// bodyError turns a decoding failure into an invalid_arguments error.
func bodyError(err error) *apiError {
	var (
		tooLarge  *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return invalidArgument("body", reasonConstraint,
			fmt.Sprintf("the request body is larger than %d bytes", tooLarge.Limit))
	case errors.As(err, &syntaxErr):
		return invalidArgument("body", reasonFormat,
			fmt.Sprintf("malformed JSON at byte offset %d: %v", syntaxErr.Offset, syntaxErr))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidArgument("body", reasonFormat, "malformed JSON: the body ends before the object is complete")
	case errors.As(err, &typeErr):
		name := typeErr.Field
		if name == "" {
			name = "body"
		}
		return invalidArgument(name, reasonFormat,
			fmt.Sprintf("expected %s, got JSON %s", describeType(typeErr.Type), typeErr.Value))
	}
	return invalidArgument("body", reasonFormat, fmt.Sprintf("invalid JSON body: %v", err))
}

// describeType names a Go type as the JSON value a client must send.
func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return fmt.Sprintf("an integer from 0 to %d", ^uint64(0)>>(64-t.Bits()))
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	}
	return t.String()
}
