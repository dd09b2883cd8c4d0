from django.urls import path

from . import views

app_name = "api"

urlpatterns = [
    path("auth/token/", views.ObtainTokenView.as_view(), name="token"),
    path("projects/", views.ProjectListView.as_view(), name="project-list"),
    path("projects/<int:pk>/", views.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<int:pk>/next/", views.NextComparisonView.as_view(), name="project-next"),
    path("projects/<int:pk>/skip/", views.SkipComparisonView.as_view(), name="project-skip"),
    path("judgments/", views.JudgmentListView.as_view(), name="judgment-list"),
    path("judgments/<int:pk>/", views.JudgmentDetailView.as_view(), name="judgment-detail"),
    # Gold answers (staff).
    path("comparisons/<int:pk>/gold/", views.ComparisonGoldView.as_view(), name="comparison-gold"),
]
