// Package names turns enumerated values into the names the API, logs and
// metrics labels show.
package names

// Of is the name m gives k, or unknown for a value m does not name.
func Of[K comparable](m map[K]string, k K, unknown string) string {
	if n, ok := m[k]; ok {
		return n
	}
	return unknown
}
