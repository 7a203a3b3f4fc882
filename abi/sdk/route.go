package sdk

// Route is one route of a Router: a request with this method and path
// (PathOnly: the path without its query) goes to Handle.
type Route struct {
	Method string
	Path   string
	Handle func(req *Request) *Response
}

// Router is a fetch handler that sends each request to the route of its
// method and path:
//
//	var router = sdk.Router{Routes: []sdk.Route{
//		{Method: "POST", Path: "/join", Handle: join},
//		{Method: "GET", Path: "/members", Handle: members},
//	}}
//
//	func init() { sdk.Serve(sdk.Handlers{Fetch: router.Fetch}) }
//
// A request no route takes is answered NotFound; with Answer405, one whose
// path has routes for other methods is answered MethodNotAllowed instead.
type Router struct {
	Routes    []Route
	Answer405 bool
}

// Fetch serves req by its route.
func (rt *Router) Fetch(req *Request) *Response {
	path := PathOnly(req)
	allow := ""
	for i := range rt.Routes {
		r := &rt.Routes[i]
		if r.Path != path {
			continue
		}
		if r.Method == req.Method {
			return r.Handle(req)
		}
		if allow != "" {
			allow += ", "
		}
		allow += r.Method
	}
	if allow != "" && rt.Answer405 {
		return MethodNotAllowed(req, allow)
	}
	return NotFound(req)
}

// NotFound answers 404 not_found, naming the request's method and path.
func NotFound(req *Request) *Response {
	return ErrorJSON(404, "not_found", "no route "+req.Method+" "+PathOnly(req))
}

// MethodNotAllowed answers 405 method_not_allowed with an Allow header of
// allow, the path's methods ("POST", or "GET, POST").
func MethodNotAllowed(req *Request, allow string) *Response {
	r := ErrorJSON(405, "method_not_allowed", req.Method+" "+PathOnly(req)+" is not allowed; use "+allow)
	r.Header = append(r.Header, Header{Name: "Allow", Value: allow})
	return r
}
