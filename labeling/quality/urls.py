from django.urls import path

from labeling.quality import views

app_name = "quality"

urlpatterns = [
    path("projects/<slug:slug>/raters/", views.raters, name="raters"),
    path("projects/<slug:slug>/raters.csv", views.raters_csv, name="raters-csv"),
    path("projects/<slug:slug>/raters/compute/", views.compute_now, name="compute"),
    path("projects/<slug:slug>/leaderboard/", views.leaderboard, name="leaderboard"),
    *(
        path(
            f"projects/<slug:slug>/raters/<str:username>/{action}/",
            views.rater_action,
            {"action": action},
            name=f"rater-{action}",
        )
        for action in ("pause", "resume", "exclude", "include")
    ),
]
