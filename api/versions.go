package api

import (
	"net/http"
	"strconv"
)

// versionJSON is the Version object of the v1alpha1 API.
type versionJSON struct {
	Name string `json:"name"`
	// EndOfLifeAt is always null: the real API sends the end of the
	// engine's support, and sdblocal does not guess it.
	EndOfLifeAt *string `json:"end_of_life_at"`
	Region      string  `json:"region"`
}

type listVersionsResponse struct {
	Versions   []versionJSON `json:"versions"`
	TotalCount uint64        `json:"total_count"`
}

// engineVersion returns the one engine version sdblocal runs, in region.
func engineVersion(region string) versionJSON {
	return versionJSON{Name: strconv.Itoa(engineMajorVersion), Region: region}
}

// listVersions handles GET /versions. It needs authentication but no
// permission, because the list holds nothing of any project. The version
// parameter filters by exact name.
func (s *server) listVersions(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	p := newQueryParser(r.URL.Query())
	paging := p.paging(nil)
	if err := p.err(); err != nil {
		return nil, err
	}
	var versions []versionJSON
	if name := r.URL.Query().Get("version"); name == "" || name == strconv.Itoa(engineMajorVersion) {
		versions = append(versions, engineVersion(call.region))
	}
	return listVersionsResponse{Versions: paginate(versions, paging), TotalCount: uint64(len(versions))}, nil
}
