// Package auth decides who may pull, push and delete. It owns the users
// (an htpasswd file of bcrypt hashes, and groups), the access rules by
// repository pattern, the signing keys and the JWTs of the token service,
// the login rate limit, and the HTTP middleware that puts them in front of
// the distribution API.
package auth
