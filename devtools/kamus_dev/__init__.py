"""Development tools of Kamus: a stand-in of the Kubernetes API that issues and reviews tokens."""
