from django.urls import path

from labeling.quality import api as quality

from . import views

app_name = "api"

urlpatterns = [
    path("auth/token/", views.ObtainTokenView.as_view(), name="token"),
    path("auth/tokens/", views.TokenListView.as_view(), name="token-list"),
    path("auth/tokens/<str:prefix>/", views.TokenDetailView.as_view(), name="token-detail"),
    path("projects/", views.ProjectListView.as_view(), name="project-list"),
    path("projects/<int:pk>/", views.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<int:pk>/next/", views.NextComparisonView.as_view(), name="project-next"),
    path("projects/<int:pk>/skip/", views.SkipComparisonView.as_view(), name="project-skip"),
    path("judgments/", views.JudgmentListView.as_view(), name="judgment-list"),
    path("judgments/<int:pk>/", views.JudgmentDetailView.as_view(), name="judgment-detail"),
    # Gold answers (managers).
    path("comparisons/<int:pk>/gold/", views.ComparisonGoldView.as_view(), name="comparison-gold"),
    # Rater quality and the source leaderboard (labeling/quality/api.py).
    path("projects/<int:pk>/raters/", quality.RaterQualityListView.as_view(), name="project-raters"),
    path("projects/<int:pk>/leaderboard/", quality.LeaderboardView.as_view(), name="project-leaderboard"),
    path("projects/<int:pk>/raters/<str:username>/pause/", quality.RaterPauseView.as_view(), name="rater-pause"),
    path("projects/<int:pk>/raters/<str:username>/resume/", quality.RaterResumeView.as_view(), name="rater-resume"),
    path("projects/<int:pk>/raters/<str:username>/exclude/", quality.RaterExcludeView.as_view(), name="rater-exclude"),
    path("projects/<int:pk>/raters/<str:username>/include/", quality.RaterIncludeView.as_view(), name="rater-include"),
]
