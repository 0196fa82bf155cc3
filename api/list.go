package api

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sdblocal/sdblocal/auth"
)

// pageQuery is the paging of a list call.
type pageQuery struct {
	// page is 1-based.
	page     int
	pageSize int
	orderBy  string
}

// queryParser reads the query parameters of a list call and collects one
// argument error per invalid parameter, so a client learns every mistake
// at once.
type queryParser struct {
	values  url.Values
	details []argumentError
}

func newQueryParser(values url.Values) *queryParser { return &queryParser{values: values} }

func (p *queryParser) fail(name, reason, help string) {
	p.details = append(p.details, argumentError{ArgumentName: name, Reason: reason, HelpMessage: help})
}

// err returns the collected errors as one invalid_arguments error, or nil.
func (p *queryParser) err() error {
	if len(p.details) == 0 {
		return nil
	}
	return invalidArguments(p.details...)
}

// paging reads page, page_size and order_by. orders lists the accepted
// order_by values, and the first one is the default. With no orders, as for
// a list that has no ordering, order_by is ignored. A page_size of 0 means
// the default, as the SDK also treats 0 as unset.
func (p *queryParser) paging(orders []string) pageQuery {
	q := pageQuery{page: 1, pageSize: defaultPageSize}
	if len(orders) > 0 {
		q.orderBy = orders[0]
	}

	if raw := p.values.Get("page"); raw != "" {
		page, err := strconv.ParseInt(raw, 10, 32)
		switch {
		case err != nil:
			p.fail("page", reasonFormat, fmt.Sprintf("page %q is not an integer", raw))
		case page < 1:
			p.fail("page", reasonConstraint, fmt.Sprintf("page must be 1 or more, got %d", page))
		default:
			q.page = int(page)
		}
	}

	if raw := p.values.Get("page_size"); raw != "" {
		size, err := strconv.ParseUint(raw, 10, 32)
		switch {
		case err != nil:
			p.fail("page_size", reasonFormat, fmt.Sprintf("page_size %q is not a non-negative integer", raw))
		case size > maxPageSize:
			p.fail("page_size", reasonConstraint, fmt.Sprintf("page_size must be at most %d, got %d", maxPageSize, size))
		case size > 0:
			q.pageSize = int(size)
		}
	}

	if raw := p.values.Get("order_by"); raw != "" && len(orders) > 0 {
		if slices.Contains(orders, raw) {
			q.orderBy = raw
		} else {
			p.fail("order_by", reasonConstraint, fmt.Sprintf("order_by %q is not one of %s", raw, strings.Join(orders, ", ")))
		}
	}
	return q
}

// uuid reads an optional UUID parameter and returns it in lower case, the
// form the catalog stores, or "" when it is absent or empty.
func (p *queryParser) uuid(name string) string {
	raw := p.values.Get(name)
	if raw == "" {
		return ""
	}
	if !auth.ValidUUID(raw) {
		p.fail(name, reasonFormat, fmt.Sprintf("%s %q is not a UUID", name, raw))
		return ""
	}
	return strings.ToLower(raw)
}

// uuids reads a repeated UUID parameter. Empty values are skipped.
func (p *queryParser) uuids(name string) []string {
	var out []string
	for _, raw := range p.values[name] {
		if raw == "" {
			continue
		}
		if !auth.ValidUUID(raw) {
			p.fail(name, reasonFormat, fmt.Sprintf("%s contains %q, which is not a UUID", name, raw))
			continue
		}
		out = append(out, strings.ToLower(raw))
	}
	return out
}

// boolean reads an optional true/false parameter, nil when absent.
func (p *queryParser) boolean(name string) *bool {
	raw := p.values.Get(name)
	if raw == "" {
		return nil
	}
	v, err := strconv.ParseBool(raw)
	if err != nil {
		p.fail(name, reasonFormat, fmt.Sprintf("%s %q is not true or false", name, raw))
		return nil
	}
	return &v
}

// enum reads an optional parameter that must be one of allowed. The value
// unset, which the SDK always sends for an enum left at its zero value, and
// an absent parameter both return "".
func (p *queryParser) enum(name, unset string, allowed []string) string {
	raw := p.values.Get(name)
	if raw == "" || raw == unset {
		return ""
	}
	if !slices.Contains(allowed, raw) {
		p.fail(name, reasonConstraint, fmt.Sprintf("%s %q is not one of %s", name, raw, strings.Join(append([]string{unset}, allowed...), ", ")))
		return ""
	}
	return raw
}

// paginate returns the page of items that q selects, never nil, so an
// empty page is sent as [] rather than null.
func paginate[T any](items []T, q pageQuery) []T {
	start := (q.page - 1) * q.pageSize
	if start >= len(items) {
		return []T{}
	}
	return items[start:min(start+q.pageSize, len(items))]
}

// ascending turns a comparison into the order an order_by value names: as it
// is for an "_asc" value and reversed for a "_desc" one.
func ascending(orderBy string, c int) int {
	if strings.HasSuffix(orderBy, "_desc") {
		return -c
	}
	return c
}
